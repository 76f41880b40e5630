import { messageOf, VmcError } from '../errors.js';
import type { ContainerConfig } from '../oci/bundle.js';
import { formatEnv } from '../oci/env.js';
import { RLIMITS } from '../oci/linux.js';
import type { ProcessSpec } from '../oci/process.js';
import type { ContainerExec, ContainerMount, ExecProcess, WindowSize } from '../protocol/agent/messages.js';
import { guestStartHooks, hookState } from './hooks.js';
import { cgroupLimits } from './resources.js';
import type { Stdio } from './shim-interface.js';

/**
 * The terminal size a container's process starts with: none unless the bundle asks for one; then the stdio
 * must be a terminal (the pty `--console-socket` made, or the caller's own), else the error says how.
 */
export function terminalOf(cfg: ContainerConfig, stdio: Stdio): WindowSize | undefined {
  if (!cfg.process.terminal) return undefined;
  if (!stdio.terminal)
    throw new VmcError(
      'VMC_ERR_OCI_UNSUPPORTED',
      `${cfg.bundle}/config.json: process.terminal is true but the container's stdio is not a terminal: ` +
        'give --console-socket (or set process.terminal to false)',
    );
  return stdio.terminal.size();
}

/** The error of a container process that could not be started. */
export function startError(id: string, err: unknown): VmcError {
  return new VmcError('VMC_ERR_CONTAINER_START', `container ${id}: ${messageOf(err)}`, { cause: err });
}

/** The bundle's process in the agent's terms: args, `KEY=VALUE` env, cwd and user. */
export function execProcessOf(cfg: ContainerConfig): ExecProcess {
  return agentProcess(cfg.process);
}

/** An OCI process (a bundle's, or an exec's) in the agent's terms: args, `KEY=VALUE` env, cwd and user. */
export function agentProcess(p: ProcessSpec): ExecProcess {
  return {
    args: p.args,
    env: formatEnv(p.env),
    cwd: p.cwd,
    uid: p.uid,
    gid: p.gid,
    additionalGids: p.additionalGids,
  };
}

/** `process.rlimits` and `process.oomScoreAdj` as the helper sets them (for the container's process and execs). */
function processLimits(cfg: ContainerConfig): Pick<ContainerExec, 'rlimits' | 'oomScoreAdj'> {
  const out: Pick<ContainerExec, 'rlimits' | 'oomScoreAdj'> = {};
  if (cfg.linux.rlimits.length)
    out.rlimits = cfg.linux.rlimits.map((r) => ({ resource: RLIMITS[r.type], soft: r.soft, hard: r.hard }));
  if (cfg.linux.oomScoreAdj !== undefined) out.oomScoreAdj = cfg.linux.oomScoreAdj;
  return out;
}

/**
 * How the guest makes container `id`'s process: its root in the VM's share, mounts, hostname, read-only root,
 * no_new_privs, supplementary groups, its cgroup with the bundle's limits, masked and read-only paths,
 * sysctls, root propagation, rlimits, OOM score and startContainer hooks (with the OCI state of the process
 * `pid` stands for). With `join` (a guest pid of the container's running process), a process that joins it
 * instead (`exec`): same root, cgroup and per-process limits, no set-up.
 */
export function containerExecOf(
  id: string,
  cfg: ContainerConfig,
  mounts: ContainerMount[],
  join?: number,
  pid = process.pid,
): ContainerExec {
  const root = `${id}/rootfs`;
  if (join !== undefined) return { root, join, cgroup: { name: id }, ...processLimits(cfg) };
  const c: ContainerExec = {
    root,
    readonly: cfg.rootfsReadonly,
    noNewPrivileges: cfg.process.noNewPrivileges,
    additionalGids: cfg.process.additionalGids,
    mounts,
    cgroup: { name: id, limits: cgroupLimits(cfg.resources) },
    ...processLimits(cfg),
  };
  const l = cfg.linux;
  if (l.maskedPaths.length) c.maskedPaths = l.maskedPaths;
  if (l.readonlyPaths.length) c.readonlyPaths = l.readonlyPaths;
  if (Object.keys(l.sysctl).length) c.sysctl = { ...l.sysctl };
  if (l.rootfsPropagation !== undefined) c.propagation = l.rootfsPropagation;
  if (cfg.hooks.startContainer.length) {
    c.startHooks = guestStartHooks(cfg);
    c.hookState = hookState(id, cfg, 'created', pid);
  }
  if (cfg.hostname) c.hostname = cfg.hostname;
  return c;
}
