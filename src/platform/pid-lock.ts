import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { VmcError } from '../errors.js';
import type { Clock } from './clock.js';
import { identify, isAlive, type ProcessIdentity } from './process.js';

/** How often a waiting process looks at the lock again. */
const POLL_MS = 200;

/**
 * Runs `fn` holding the lock file `path`, exclusive across processes: created with O_EXCL, holding the
 * owner's identity (pid and start time). A lock whose owner has died (crashed, killed) is taken over, so a
 * crash never blocks the next process; a live owner is waited for, up to `waitMs`, then VMC_ERR_LOCK_TIMEOUT
 * names the lock and its owner. `onWait` is told once that this process waits. Hand-written: lock libraries
 * (proper-lockfile) guess staleness from file times; vmcache knows its owners by pid identity, as its VM
 * records do.
 */
export async function withPidLock<T>(
  path: string,
  clock: Clock,
  waitMs: number,
  fn: () => Promise<T>,
  onWait?: (owner: ProcessIdentity) => void,
): Promise<T> {
  const me = identify(process.pid)!;
  const deadline = clock.monotonic() + waitMs;
  let told = false;
  for (;;) {
    let fd: number;
    try {
      fd = openSync(path, 'wx', 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let owner = readOwner(path);
      // No owner yet: it is being written right now (or its writer died in between): look again in a moment.
      if (!owner) {
        await clock.sleep(POLL_MS);
        owner = readOwner(path);
      }
      if (!owner || !isAlive(owner)) {
        // A dead owner's lock: take it over (unlink, then the O_EXCL create above, which one taker wins). Two
        // takers of one dead lock within a poll could both unlink; the window is a few microseconds, after a
        // crash only.
        rmSync(path, { force: true });
        continue;
      }
      if (!told) {
        told = true;
        onWait?.(owner);
      }
      if (clock.monotonic() > deadline)
        throw new VmcError(
          'VMC_ERR_LOCK_TIMEOUT',
          `${path} is held by pid ${owner.pid} for more than ${Math.round(waitMs / 1000)} s`,
        );
      await clock.sleep(POLL_MS);
      continue;
    }
    try {
      writeSync(fd, JSON.stringify(me));
    } finally {
      closeSync(fd);
    }
    try {
      return await fn();
    } finally {
      rmSync(path, { force: true });
    }
  }
}

function readOwner(path: string): ProcessIdentity | null {
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as ProcessIdentity;
    return Number.isInteger(v.pid) && Number.isInteger(v.startTime) ? v : null;
  } catch {
    return null;
  }
}
