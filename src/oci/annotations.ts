import { VmcError } from '../errors.js';
import { preview } from './validate.js';

/** Whether a bundle is a pod sandbox (its own VM) or a container joining a sandbox. */
export type ContainerType = 'sandbox' | 'container';

/** CRI annotations naming the container type, in the order Kata's `oci` package checks them, with their values. */
const TYPE_KEYS: ReadonlyArray<[string, Record<string, ContainerType>]> = [
  ['io.kubernetes.cri.container-type', { sandbox: 'sandbox', container: 'container' }],
  ['io.kubernetes.cri-o.ContainerType', { sandbox: 'sandbox', container: 'container' }],
  ['io.kubernetes.docker.type', { podsandbox: 'sandbox', container: 'container' }],
];

/** CRI annotations naming the sandbox id, in Kata's order. */
const SANDBOX_ID_KEYS = [
  'io.kubernetes.cri.sandbox-id',
  'io.kubernetes.cri-o.SandboxID',
  'io.kubernetes.sandbox.id',
] as const;

/** The container type: the first CRI key present decides; no key means a sandbox; an unknown value is an error. */
export function containerType(annotations: Record<string, string>, file: string): ContainerType {
  for (const [key, values] of TYPE_KEYS) {
    const v = annotations[key];
    if (v === undefined) continue;
    // Own members only: `constructor` or `__proto__` must not find Object.prototype's (found by fuzzing).
    const t = Object.hasOwn(values, v) ? values[v] : undefined;
    if (!t) {
      throw new VmcError(
        'VMC_ERR_OCI_INVALID',
        `${file}: annotations["${key}"] must be one of ${Object.keys(values).join(', ')}, got ${preview(v)}`,
      );
    }
    return t;
  }
  return 'sandbox';
}

/** The sandbox id from the first CRI key present, or undefined. */
export function sandboxId(annotations: Record<string, string>): string | undefined {
  for (const k of SANDBOX_ID_KEYS) if (annotations[k]) return annotations[k];
  return undefined;
}

/** Guest assets a bundle may ask for through Kata's hypervisor annotations. */
export interface AssetOverrides {
  kernel?: { path: string; hash?: string };
  image?: { path: string; hash?: string };
  initrd?: { path: string; hash?: string };
}

const ASSET_PREFIX = 'io.katacontainers.config.hypervisor.';

/** Kata's asset annotations (`…hypervisor.kernel`, `…kernel_hash`, likewise image and initrd), carried into the sandbox config. */
export function assetAnnotations(annotations: Record<string, string>, file: string): AssetOverrides {
  const out: AssetOverrides = {};
  for (const kind of ['kernel', 'image', 'initrd'] as const) {
    const path = annotations[`${ASSET_PREFIX}${kind}`];
    const hash = annotations[`${ASSET_PREFIX}${kind}_hash`];
    if (path === undefined) {
      if (hash !== undefined)
        throw new VmcError(
          'VMC_ERR_OCI_INVALID',
          `${file}: annotations["${ASSET_PREFIX}${kind}_hash"] given without "${ASSET_PREFIX}${kind}"`,
        );
      continue;
    }
    if (!path.startsWith('/'))
      throw new VmcError(
        'VMC_ERR_OCI_INVALID',
        `${file}: annotations["${ASSET_PREFIX}${kind}"] must be an absolute path, got ${preview(path)}`,
      );
    if (hash !== undefined && !/^[0-9a-f]{64,128}$/.test(hash)) {
      throw new VmcError(
        'VMC_ERR_OCI_INVALID',
        `${file}: annotations["${ASSET_PREFIX}${kind}_hash"] must be a hex SHA-256 or SHA-512 digest`,
      );
    }
    out[kind] = hash === undefined ? { path } : { path, hash };
  }
  return out;
}
