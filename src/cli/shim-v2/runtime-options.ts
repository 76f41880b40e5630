import { Options } from '../../protocol/shim/generated/containerd/runtimeoptions/v1/api.js';
import { Any } from '../../protocol/shim/generated/google/protobuf/any.js';

/** The Any type CRI gives a non-runc runtime's options (pkg/runtimeoptions/v1). */
const OPTIONS_TYPE = 'runtimeoptions.v1.Options';

/**
 * The configuration file the runtime options name (`ConfigPath`), from the bytes containerd writes on the
 * stdin of `start` (a protobuf Any); '' when there are none, they are of another type (runc's options), or
 * they do not decode: the daemon then falls back to VMCACHE_CONFIG and /etc/vmcache/configuration.toml.
 */
export function configPathOfOptions(bytes: Uint8Array): string {
  if (bytes.length === 0) return '';
  try {
    const any = Any.decode(bytes);
    if (any.typeUrl !== OPTIONS_TYPE && !any.typeUrl.endsWith(`/${OPTIONS_TYPE}`)) return '';
    return Options.decode(any.value).configPath;
  } catch {
    return '';
  }
}
