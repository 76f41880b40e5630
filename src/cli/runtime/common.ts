import { resolve } from 'node:path';
import { VmcError } from '../../errors.js';
import { writeFileAtomic } from '../../platform/atomic-write.js';
import { parseSignal } from '../../platform/signals.js';
import { ControlClient } from '../../protocol/control/client.js';
import { controlSocketPath } from '../../protocol/control/socket-path.js';
import type { SandboxDeps } from '../../sandbox/shim-interface.js';
import { type ContainerState, effectiveStatus, StateStore } from '../../sandbox/state-store.js';
import { type CliContext, type GlobalOptions, makeContext } from '../context.js';

/** The context of the runtime verbs: the CLI context plus the container state store under `--root`. */
export type RuntimeContext = CliContext & SandboxDeps & { global: GlobalOptions };

/** Builds the runtime context (`stderr: false` for the container's host-side process). */
export function runtimeContext(
  g: GlobalOptions,
  use: { stderr: boolean } = { stderr: true },
): RuntimeContext {
  const ctx = makeContext(g, use);
  // The default follows the run directory (/run/vmcache, or $VMCACHE_RUN_DIR), as runc's does /run/runc.
  const root = resolve(g.root ?? ctx.paths.runDir);
  return { ...ctx, store: new StateStore(root, ctx.clock), global: { ...g, root } };
}

/** The global options a spawned vmcache process must get to see the same state and configuration. */
export function forwardedGlobals(g: GlobalOptions): string[] {
  const a = ['--root', g.root!];
  if (g.log) a.push('--log', resolve(g.log));
  if (g.logFormat) a.push('--log-format', g.logFormat);
  if (g.debug) a.push('--debug');
  if (g.config) a.push('--config', resolve(g.config));
  return a;
}

/** A signal given as a name (`KILL`, `SIGKILL`) or a number (`9`), as its full name; usage error otherwise. */
export function signalName(s: string): NodeJS.Signals {
  const name = parseSignal(s);
  if (!name) throw new VmcError('VMC_ERR_CLI_USAGE', `unknown signal ${JSON.stringify(s)}`);
  return name;
}

/** Connects to the control socket of container `id`'s host-side process. */
export function connectShim(ctx: RuntimeContext, id: string): Promise<ControlClient> {
  return ControlClient.connect(controlSocketPath(ctx.paths.runDir, ctx.store.root, id), id);
}

/** Reads the state and refuses unless its status is one of `allowed` (naming both). */
export function requireStatus(
  ctx: RuntimeContext,
  id: string,
  verb: string,
  allowed: string[],
): ContainerState {
  const s = ctx.store.read(id);
  const status = effectiveStatus(s);
  if (!allowed.includes(status))
    throw new VmcError(
      'VMC_ERR_INVALID_STATE',
      `container ${id} is ${status}; ${verb} needs ${allowed.join(' or ')}`,
    );
  return s;
}

/** The OCI runtime-spec state of a container (what `state` prints; `pid` is 0 once stopped). */
export function ociState(s: ContainerState): Record<string, unknown> {
  const status = effectiveStatus(s);
  return {
    ociVersion: '1.0.2',
    id: s.id,
    status,
    pid: status === 'stopped' || !s.shim ? 0 : s.shim.pid,
    bundle: s.bundle,
    rootfs: s.rootfs,
    created: s.created,
    owner: '',
    annotations: s.annotations,
  };
}

/** Writes a pid file as runc does: the bare pid, no newline, replaced atomically. */
export function writePidFile(path: string, pid: number): void {
  writeFileAtomic(resolve(path), String(pid));
}
