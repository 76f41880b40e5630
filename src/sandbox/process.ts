import type { ContainerConfig } from '../oci/bundle.js';
import type { ContainerExec, ContainerMount } from '../protocol/agent/messages.js';
import type { ExecProcess } from './control.js';
import { cgroupLimits } from './resources.js';

/** The bundle's process in the agent's terms: args, `KEY=VALUE` env, cwd and user. */
export function execProcessOf(cfg: ContainerConfig): ExecProcess {
  const p = cfg.process;
  return {
    args: p.args,
    env: p.env.map((e) => `${e.name}=${e.value}`),
    cwd: p.cwd,
    uid: p.uid,
    gid: p.gid,
    additionalGids: p.additionalGids,
  };
}

/**
 * How the guest makes container `id`'s process: its root in the VM's share, mounts, hostname, read-only root,
 * no_new_privs, supplementary groups and its cgroup with the bundle's limits. With `join` (a guest pid of the
 * container's running process), a process that joins it instead (`exec`): same root and cgroup, no set-up.
 */
export function containerExecOf(
  id: string,
  cfg: ContainerConfig,
  mounts: ContainerMount[],
  join?: number,
): ContainerExec {
  const root = `${id}/rootfs`;
  if (join !== undefined) return { root, join, cgroup: { name: id } };
  const c: ContainerExec = {
    root,
    readonly: cfg.rootfsReadonly,
    noNewPrivileges: cfg.process.noNewPrivileges,
    additionalGids: cfg.process.additionalGids,
    mounts,
    cgroup: { name: id, limits: cgroupLimits(cfg.resources) },
  };
  if (cfg.hostname) c.hostname = cfg.hostname;
  return c;
}
