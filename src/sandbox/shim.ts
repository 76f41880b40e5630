import { statfsSync } from 'node:fs';
import type { VmSpec } from '../hypervisor/types.js';
import { readBundle } from '../oci/bundle.js';
import type { PhaseRecorder } from '../platform/phases.js';
import { MemberShim } from './member-shim.js';
import { SandboxShim } from './sandbox-shim.js';
import type { SandboxDeps, Shim } from './shim-interface.js';

export type { Shim };

/**
 * Creates the container recorded (as `creating`) under `id`: a sandbox (no CRI annotation, or container-type
 * `sandbox`) gets a VM of its own; a pod member (container-type `container`) joins its sandbox's VM.
 */
export function createShim(
  id: string,
  spec: VmSpec,
  deps: SandboxDeps,
  opts: { useCache: boolean; signal?: AbortSignal; trace?: PhaseRecorder },
): Promise<Shim> {
  const cfg = readBundle(deps.store.read(id).bundle, (p) => statfsSync(p));
  return cfg.containerType === 'container' && cfg.sandboxId !== id
    ? MemberShim.create(id, cfg, deps)
    : SandboxShim.create(id, cfg, spec, deps, opts);
}
