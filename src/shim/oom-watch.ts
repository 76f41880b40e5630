import type { Clock } from '../platform/clock.js';

/** What an OomWatch reads and tells. */
export interface OomWatchDeps {
  /** The cgroup's `memory.events` oom_kill count now. */
  oomKills(): Promise<number>;
  /** Whether a read may be made now (the VM runs: a paused guest's agent does not answer). */
  active(): boolean;
  /** The kernel killed for memory in the cgroup since the last read. */
  onOom(): void;
  clock: Clock;
  /** Read interval (ms). */
  everyMs: number;
}

/**
 * Watches a container's guest cgroup for OOM kills (`memory.events` oom_kill going up) by reading it every
 * `everyMs` while the container runs, for the Task API's `/tasks/oom` event (the CRI marks the container
 * OOMKilled by it). Polling, not a wait in the guest: one agent round trip per interval, and nothing held
 * open in the guest when the VM is paused, handed over or dies. A failed read is skipped (the container's
 * exit says the rest).
 */
export class OomWatch {
  #seen: number | null = null;
  #cancel: () => void = () => {};
  #stopped = false;

  constructor(private readonly d: OomWatchDeps) {}

  start(): void {
    this.#schedule(0);
  }

  stop(): void {
    this.#stopped = true;
    this.#cancel();
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#cancel = this.d.clock.setTimeout(() => void this.#tick(), ms);
  }

  async #tick(): Promise<void> {
    if (this.d.active()) {
      try {
        const n = await this.d.oomKills();
        if (!this.#stopped && this.#seen !== null && n > this.#seen) this.d.onOom();
        this.#seen = n;
      } catch {
        // the VM is going or the agent is busy: the next read tells
      }
    }
    this.#schedule(this.d.everyMs);
  }
}
