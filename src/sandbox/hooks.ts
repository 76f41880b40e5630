import { messageOf, VmcError } from '../errors.js';
import type { ContainerConfig } from '../oci/bundle.js';
import { DEFAULT_HOOK_TIMEOUT_S, type HookKind, type HookSpec } from '../oci/hooks.js';
import type { CommandRunner } from '../platform/command.js';
import type { Logger } from '../platform/logger.js';
import type { ContainerExec } from '../protocol/agent/messages.js';

/**
 * OCI hooks, where vmcache runs each (the container's namespaces are inside the VM; the hooks' programs are
 * the host's, as with every runtime whose containers run in a VM):
 * - prestart, createRuntime: on the host (the runtime namespace), during `create`, once the VM and the
 *   container's root in its share are ready; a failure undoes the creation.
 * - createContainer: on the host too, right after them. The spec runs it in the container namespace before
 *   pivot_root, which for vmcache is inside the guest before the process starts: a host program cannot run
 *   there. Kata does the same.
 * - startContainer: in the guest, in the container's root and namespaces, right before its program (the
 *   helper runs it; the path is resolved in the container's root, as the spec asks); a failure fails `start`.
 * - poststart: on the host after the process started; poststop: on the host when the container is deleted.
 *   Their failures are logged as warnings and the life cycle goes on.
 * Each hook gets the OCI state on stdin and is killed after its `timeout` (or DEFAULT_HOOK_TIMEOUT_S: the
 * spec sets no bound, vmcache never waits without one).
 */

/** The OCI state a hook reads on stdin. */
export function hookState(
  id: string,
  cfg: Pick<ContainerConfig, 'bundle' | 'annotations'>,
  status: 'creating' | 'created' | 'running' | 'stopped',
  pid: number,
): string {
  return JSON.stringify({
    ociVersion: '1.0.2',
    id,
    status,
    pid,
    bundle: cfg.bundle,
    annotations: cfg.annotations,
  });
}

/** `NAME=value` entries to an environment object (a hook gets only the environment it names). */
function envOf(entries: readonly string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const e of entries) {
    const at = e.indexOf('=');
    if (at > 0) env[e.slice(0, at)] = e.slice(at + 1);
  }
  return env;
}

/** What running host-side hooks needs. */
export interface HookDeps {
  run: CommandRunner;
  logger: Logger;
}

async function runOne(kind: HookKind, i: number, h: HookSpec, state: string, deps: HookDeps): Promise<void> {
  const timeout = h.timeout ?? DEFAULT_HOOK_TIMEOUT_S;
  const argv0 = h.args[0] ?? h.path;
  deps.logger.debug({ hook: `${kind}[${i}]`, path: h.path }, 'running hook');
  await deps.run(h.path, h.args.slice(1), {
    argv0,
    env: envOf(h.env),
    input: Buffer.from(state),
    timeoutMs: timeout * 1000,
    errorCode: 'VMC_ERR_OCI_HOOK',
  });
}

/** Runs the hooks of `kind` in order; the first failure throws VMC_ERR_OCI_HOOK naming `hooks.KIND[i]`. */
function runHooks(
  kind: HookKind,
  cfg: Pick<ContainerConfig, 'bundle' | 'hooks'>,
  state: string,
  deps: HookDeps,
): Promise<void> {
  return runEach(kind, cfg, state, deps, (i, err) => {
    throw new VmcError(
      'VMC_ERR_OCI_HOOK',
      `${cfg.bundle}/config.json: hooks.${kind}[${i}] ${messageOf(err)}`,
      {
        cause: err,
      },
    );
  });
}

/** Runs the hooks of `kind` (poststart, poststop), logging a failure as a warning and going on with the next. */
export function runHooksWarning(
  kind: HookKind,
  cfg: Pick<ContainerConfig, 'bundle' | 'hooks'>,
  state: string,
  deps: HookDeps,
): Promise<void> {
  return runEach(kind, cfg, state, deps, (i, err) =>
    deps.logger.warn(
      { hook: `${kind}[${i}]`, path: cfg.hooks[kind][i]?.path, err: messageOf(err) },
      `${kind} hook failed`,
    ),
  );
}

/** The hooks of `kind` in order; `failed` decides what a failure does (throw to stop, return to go on). */
async function runEach(
  kind: HookKind,
  cfg: Pick<ContainerConfig, 'hooks'>,
  state: string,
  deps: HookDeps,
  failed: (i: number, err: unknown) => void,
): Promise<void> {
  for (const [i, h] of cfg.hooks[kind].entries()) {
    try {
      await runOne(kind, i, h, state, deps);
    } catch (err) {
      failed(i, err);
    }
  }
}

/**
 * prestart, createRuntime and createContainer hooks, on the host, once the container's VM and root are ready
 * and before it is recorded created (see above for why all three run there). A failure fails `create`.
 */
export async function runCreateHooks(
  id: string,
  cfg: Pick<ContainerConfig, 'bundle' | 'annotations' | 'hooks'>,
  deps: HookDeps,
): Promise<void> {
  const state = hookState(id, cfg, 'creating', process.pid);
  for (const kind of ['prestart', 'createRuntime', 'createContainer'] as const)
    await runHooks(kind, cfg, state, deps);
}

/** poststart hooks, on the host, once the container's process runs; a failure is a warning. */
export function runPoststartHooks(
  id: string,
  cfg: Pick<ContainerConfig, 'bundle' | 'annotations' | 'hooks'>,
  deps: HookDeps,
): Promise<void> {
  return runHooksWarning('poststart', cfg, hookState(id, cfg, 'running', process.pid), deps);
}

/** The startContainer hooks as the guest's helper runs them (a timeout always set). */
export function guestStartHooks(cfg: Pick<ContainerConfig, 'hooks'>): ContainerExec['startHooks'] {
  return cfg.hooks.startContainer.map((h) => ({
    path: h.path,
    args: h.args,
    env: h.env,
    timeout: h.timeout ?? DEFAULT_HOOK_TIMEOUT_S,
  }));
}
