/**
 * A phase breakdown of one operation (getVM, a container's run): where its time went, host side, and what the
 * guest measured on its own clock inside those phases. Phases are laps of one monotonic clock, so they add
 * up to the operation's total by construction; figures are nested measurements (the guest's, a round trip's)
 * that need not add up to anything.
 */
import type { Clock } from './clock.js';

/** One host phase: `ms` of the operation's time, in the order they ran. */
export interface Phase {
  name: string;
  ms: number;
}

/**
 * A measurement inside host phase `phase`: `clock` says whose monotonic clock it was read on (the guest's
 * ticks only within the guest; its durations are comparable with the host's, its instants are not).
 */
export interface PhaseFigure {
  phase: string;
  name: string;
  ms: number;
  clock: 'host' | 'guest';
}

/** A finished breakdown. `totalMs` is the time from the recorder's start to the last lap. */
export interface PhaseReport {
  totalMs: number;
  phases: Phase[];
  figures: PhaseFigure[];
}

/**
 * Records the phases of one operation as laps: `lap(name)` ends the phase that began at the previous lap (or
 * at the start), so nothing between two laps goes unaccounted. Cost: one monotonic read per lap.
 */
export class PhaseRecorder {
  readonly #clock: Pick<Clock, 'monotonic'>;
  readonly #start: number;
  #last: number;
  readonly #phases: Phase[] = [];
  readonly #figures: PhaseFigure[] = [];

  /** `start`: the monotonic time the operation began (default now; 0 for "since this process started"). */
  constructor(clock: Pick<Clock, 'monotonic'>, start = clock.monotonic()) {
    this.#clock = clock;
    this.#start = start;
    this.#last = start;
  }

  /** Ends the current phase as `name`; returns its duration (ms). */
  lap(name: string): number {
    const now = this.#clock.monotonic();
    const ms = now - this.#last;
    this.#last = now;
    this.#phases.push({ name, ms });
    return ms;
  }

  /** Adds a measurement made inside phase `phase` (usually the one the next lap ends). */
  figure(phase: string, name: string, ms: number, clock: 'host' | 'guest'): void {
    this.#figures.push({ phase, name, ms, clock });
  }

  /** Time since the start, up to now (ms). */
  elapsed(): number {
    return this.#clock.monotonic() - this.#start;
  }

  /** The breakdown so far; `from`: only the phases and figures recorded after that many of each. */
  report(from: { phases: number; figures: number } = { phases: 0, figures: 0 }): PhaseReport {
    const phases = this.#phases.slice(from.phases).map((p) => ({ ...p }));
    return {
      totalMs: phases.reduce((sum, p) => sum + p.ms, 0),
      phases,
      figures: this.#figures.slice(from.figures).map((f) => ({ ...f })),
    };
  }

  /** A mark for `report(from)`: what has been recorded so far. */
  mark(): { phases: number; figures: number } {
    return { phases: this.#phases.length, figures: this.#figures.length };
  }
}
