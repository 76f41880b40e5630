import { statfsSync } from 'node:fs';
import type { VmSpec } from '../hypervisor/types.js';
import { readBundle } from '../oci/bundle.js';
import type { ExitStatus } from '../protocol/agent/client.js';
import { ContainerShim, checkSupported, type SandboxDeps, type Stdio } from './container.js';
import { MemberShim } from './member.js';

/** What the host-side process of a container does, whichever kind of container it is. */
export interface Shim {
  readonly status: 'created' | 'running' | 'paused' | 'stopped';
  /** Resolves with the container process's exit status once the container has stopped and is cleaned up. */
  readonly stopped: Promise<ExitStatus>;
  /** Starts the container's process with `stdio` attached. Only valid when created. */
  start(stdio: Stdio): Promise<void>;
  /** Delivers a signal (a name); before start, stops the container. */
  kill(signal: string): Promise<void>;
}

/**
 * Creates the container recorded (as `creating`) under `id`: a sandbox (no CRI annotation, or container-type
 * `sandbox`) gets a VM of its own; a pod member (container-type `container`) joins its sandbox's VM.
 */
export function createShim(
  id: string,
  spec: VmSpec,
  deps: SandboxDeps,
  opts: { useCache: boolean; signal?: AbortSignal },
): Promise<Shim> {
  const cfg = readBundle(deps.store.read(id).bundle, (p) => statfsSync(p));
  checkSupported(cfg);
  return cfg.containerType === 'container' && cfg.sandboxId !== id
    ? MemberShim.create(id, cfg, deps)
    : ContainerShim.create(id, cfg, spec, deps, opts);
}
