/**
 * The guest's own times in its replies (`gt`): what they are, and their validation on the host. Optional
 * fields of `hello-ok` and `res` (docs/agent-protocol.md, "Guest times").
 */
import { isObj, isOneOf, isUint, shownValue } from '../guards.js';

/**
 * When the guest saw a host connection and its hello (`hello-ok.gt`), in microseconds of the guest's monotonic
 * clock (CLOCK_MONOTONIC: comparable only with other guest times, never with the host's clock).
 */
export interface HelloTimes {
  /** The connection was seen: the guest's blocking write of `ready` returned. */
  conn: number;
  /** The chunk holding the hello that this answers arrived. */
  rx: number;
  /** The answer was written. */
  tx: number;
}

/**
 * When the guest received and answered a request (`res.gt`), in microseconds of its monotonic clock, and what
 * it spent on the steps of an `exec` (durations in µs, each within `tx - rx`).
 */
export interface ReplyTimes {
  /** The chunk holding the request arrived. */
  rx: number;
  /** The answer was written. */
  tx: number;
  /** A container process: mounting the VM's share (or finding it mounted). */
  share?: number;
  /** fork + exec of the process (Node's spawn, which returns once the child has exec'd). */
  spawn?: number;
  /** A container process: the helper's namespaces, cgroup, mounts and chroot, until it exec'd the program. */
  enter?: number;
  /** A `net` request: waiting for the hot-plugged NIC to appear (its MAC in /sys/class/net). */
  nicWait?: number;
  /** A `net` request: giving the NIC its MTU, addresses and routes and setting its link up. */
  nicConfig?: number;
}

/** The optional step durations of ReplyTimes. */
const REPLY_STEPS = ['share', 'spawn', 'enter', 'nicWait', 'nicConfig'] as const;

/** Why `gt` is not a HelloTimes (non-negative integers, conn ≤ rx ≤ tx, nothing else), or null. */
export function helloTimesError(gt: unknown): string | null {
  const what =
    'hello-ok.gt must be {conn, rx, tx}: guest monotonic µs, non-negative integers, conn ≤ rx ≤ tx';
  if (!isObj(gt)) return `${what}; got ${shownValue(gt)}`;
  for (const k of Object.keys(gt))
    if (k !== 'conn' && k !== 'rx' && k !== 'tx') return `${what}; unknown field ${shownValue(k)}`;
  const { conn, rx, tx } = gt;
  if (!isUint(conn) || !isUint(rx) || !isUint(tx)) return `${what}; got ${shownValue(gt)}`;
  if (conn > rx || rx > tx) return `${what}; got conn ${conn}, rx ${rx}, tx ${tx}`;
  return null;
}

/**
 * Why `gt` is not a ReplyTimes (non-negative integers, rx ≤ tx, the steps within tx - rx, nothing else), or
 * null.
 */
export function replyTimesError(gt: unknown): string | null {
  const what = `res.gt must be {rx, tx, ${REPLY_STEPS.map((k) => `${k}?`).join(', ')}}: guest µs, non-negative integers`;
  if (!isObj(gt)) return `${what}; got ${shownValue(gt)}`;
  for (const k of Object.keys(gt))
    if (k !== 'rx' && k !== 'tx' && !isOneOf(REPLY_STEPS, k))
      return `${what}; unknown field ${shownValue(k)}`;
  const { rx, tx } = gt;
  if (!isUint(rx) || !isUint(tx)) return `${what}; got rx ${shownValue(rx)}, tx ${shownValue(tx)}`;
  if (rx > tx) return `${what}; rx ${rx} is after tx ${tx}`;
  let steps = 0;
  for (const k of REPLY_STEPS) {
    const d = gt[k];
    if (d === undefined) continue;
    if (!isUint(d)) return `${what}; got ${k} ${shownValue(d)}`;
    steps += d;
  }
  if (steps > tx - rx) return `${what}; its steps (${steps} µs) exceed tx - rx (${tx - rx} µs)`;
  return null;
}
