/**
 * Control channel messages: what other vmcache invocations (`start`, `kill`, `pause`, `resume`, `ps`, `exec`)
 * send a container's host-side process (the "shim"), and what it answers. Frames are the agent's (`VMC1` +
 * length + JSON, see ../agent/framing.ts); every frame is validated here, at the boundary, by both ends.
 */

import { CPU_PERIOD_RANGE, CPU_QUOTA_RANGE, MAX_PIDS_LIMIT, MIN_MEMORY_LIMIT } from '../../oci/bundle.js';
import type { ResourceUpdate } from '../../oci/resource-update.js';
import {
  type ContainerExec,
  containerError,
  type ExecProcess,
  execProcessError,
  SHAREABLE_NAMESPACES,
  type WindowSize,
  windowSizeError,
} from '../agent/messages.js';
import { isContainerId, isObj, isOneOf, isUint, shownValue } from '../guards.js';

export type { ResourceUpdate };

/** Why `v` is not a ResourceUpdate (naming the field), or null. */
export function resourceUpdateError(v: unknown, at: string): string | null {
  if (!isObj(v)) return `${at} must be an object`;
  const known = ['memory', 'cpuQuota', 'cpuPeriod', 'pids'];
  for (const k of Object.keys(v)) if (!known.includes(k)) return `${at}: unknown field ${shownValue(k)}`;
  const int = (k: string, [lo, hi]: readonly [number, number], nullable: boolean): string | null => {
    const x = v[k];
    if (x === undefined || (nullable && x === null)) return null;
    return typeof x === 'number' && Number.isSafeInteger(x) && x >= lo && x <= hi
      ? null
      : `${at}.${k} must be an integer from ${lo} to ${hi}${nullable ? ' or null (no limit)' : ''}`;
  };
  return (
    int('memory', [MIN_MEMORY_LIMIT, Number.MAX_SAFE_INTEGER], true) ??
    int('cpuQuota', CPU_QUOTA_RANGE, true) ??
    int('cpuPeriod', CPU_PERIOD_RANGE, false) ??
    int('pids', [1, MAX_PIDS_LIMIT], true)
  );
}

/** Requests a client sends. */
export type ControlRequest =
  | { t: 'start' }
  | { t: 'kill'; signal: string }
  | { t: 'pause' }
  | { t: 'resume' }
  | { t: 'ps' }
  /**
   * Signals every process of container `name` (the shim's own container, or a member of its sandbox) through
   * its guest cgroup, including what its main process left behind: `kill --all`. Only the VM's owner does it.
   */
  | { t: 'signal-all'; name: string; signal: string }
  /** New limits for container `name`'s guest cgroup (this one, or a member): `update`. Only the VM's owner. */
  | { t: 'update'; name: string; resources: ResourceUpdate }
  /** The usage and limits of container `name`'s guest cgroup (a CgroupStats): `events`. Only the VM's owner. */
  | { t: 'stats'; name: string }
  /**
   * `pid`: the host process standing for the exec'd process (listed by `ps`). Without `container`, the process
   * joins the sandbox's own container process; with it, it joins the process `container.join` names (a member
   * container's) or, with no `join`, starts a new member container of this sandbox (a pod). `shareSandbox`:
   * the sandbox container's namespaces a new member shares (CRI names them by path).
   */
  | {
      t: 'exec';
      pid: number;
      process: ExecProcess;
      container?: ContainerExec;
      shareSandbox?: Array<(typeof SHAREABLE_NAMESPACES)[number]>;
      /** A terminal of this size for the process (`exec -t`, a member's `process.terminal`). */
      terminal?: WindowSize;
    }
  // Only after an `exec` was accepted on the same connection:
  | { t: 'stdin'; data: string }
  | ({ t: 'resize' } & WindowSize)
  | { t: 'close-stdin' }
  | { t: 'signal'; signal: string };

/** Replies and events the shim sends. */
export type ControlReply =
  | { t: 'ok'; result?: unknown }
  | { t: 'error'; code: string; message: string }
  | { t: 'out'; fd: 1 | 2; data: string }
  | { t: 'exit'; code: number | null; signal: string | null };

/** A signal name as `kill` takes it (`SIGTERM`, `TERM`, `SIGRTMIN+3`): never anything a shell would read. */
const SIGNAL = /^(SIG)?[A-Z0-9+-]{1,16}$/;
const isSignal = (v: unknown): v is string => typeof v === 'string' && SIGNAL.test(v);

/** Validates a request frame; returns the request or an error naming the field. */
export function parseControlRequest(
  v: unknown,
): { ok: true; req: ControlRequest } | { ok: false; error: string } {
  if (!isObj(v)) return { ok: false, error: 'request is not an object' };
  switch (v.t) {
    case 'start':
    case 'pause':
    case 'resume':
    case 'ps':
    case 'close-stdin':
      return { ok: true, req: { t: v.t } };
    case 'kill':
    case 'signal':
      if (!isSignal(v.signal))
        return { ok: false, error: `${v.t}.signal must be a signal name such as SIGTERM` };
      return { ok: true, req: { t: v.t, signal: v.signal } };
    case 'signal-all':
      if (!isContainerId(v.name)) return { ok: false, error: 'signal-all.name must be a container id' };
      if (!isSignal(v.signal))
        return { ok: false, error: 'signal-all.signal must be a signal name such as SIGTERM' };
      return { ok: true, req: { t: 'signal-all', name: v.name, signal: v.signal } };
    case 'update': {
      if (!isContainerId(v.name)) return { ok: false, error: 'update.name must be a container id' };
      const err = resourceUpdateError(v.resources, 'update.resources');
      if (err) return { ok: false, error: err };
      return { ok: true, req: { t: 'update', name: v.name, resources: v.resources as ResourceUpdate } };
    }
    case 'stats':
      if (!isContainerId(v.name)) return { ok: false, error: 'stats.name must be a container id' };
      return { ok: true, req: { t: 'stats', name: v.name } };
    case 'stdin':
      if (typeof v.data !== 'string') return { ok: false, error: 'stdin.data must be base64' };
      return { ok: true, req: { t: 'stdin', data: v.data } };
    case 'resize': {
      const err = windowSizeError(v, 'resize');
      if (err) return { ok: false, error: err };
      return { ok: true, req: { t: 'resize', rows: v.rows as number, cols: v.cols as number } };
    }
    case 'exec': {
      const p = v.process;
      if (!isUint(v.pid)) return { ok: false, error: 'exec.pid must be a pid' };
      if (!isObj(p)) return { ok: false, error: 'exec.process must be an object' };
      const bad = execProcessError(p, 'exec.process', true);
      if (bad) return { ok: false, error: bad };
      const req: ControlRequest = { t: 'exec', pid: v.pid, process: p as unknown as ExecProcess };
      if (v.container !== undefined) {
        const err = containerError(v.container);
        if (err) return { ok: false, error: `exec.container.${err}` };
        req.container = v.container as ContainerExec;
      }
      if (v.shareSandbox !== undefined) {
        const k = v.shareSandbox;
        if (!Array.isArray(k) || !k.every((x) => isOneOf(SHAREABLE_NAMESPACES, x)))
          return {
            ok: false,
            error: `exec.shareSandbox must list some of ${SHAREABLE_NAMESPACES.join(', ')}`,
          };
        req.shareSandbox = k;
      }
      if (v.terminal !== undefined) {
        const err = windowSizeError(v.terminal, 'exec.terminal');
        if (err) return { ok: false, error: err };
        req.terminal = { rows: (v.terminal as WindowSize).rows, cols: (v.terminal as WindowSize).cols };
      }
      return { ok: true, req };
    }
    default:
      return { ok: false, error: `unknown request ${shownValue(v.t)}` };
  }
}

/** Validates a reply frame. */
export function parseControlReply(v: unknown): ControlReply | null {
  if (!isObj(v)) return null;
  switch (v.t) {
    case 'ok':
      return { t: 'ok', result: v.result };
    case 'error':
      return typeof v.code === 'string' && typeof v.message === 'string'
        ? { t: 'error', code: v.code, message: v.message }
        : null;
    case 'out':
      return (v.fd === 1 || v.fd === 2) && typeof v.data === 'string'
        ? { t: 'out', fd: v.fd, data: v.data }
        : null;
    case 'exit':
      return (v.code === null || Number.isInteger(v.code)) &&
        (v.signal === null || typeof v.signal === 'string')
        ? { t: 'exit', code: v.code as number | null, signal: v.signal as string | null }
        : null;
    default:
      return null;
  }
}
