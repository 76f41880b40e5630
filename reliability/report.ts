/**
 * One row of the reliability suite's table: a scenario, how many times it ran, and what happened. `ok` is
 * the verdict the suite asserts (every row must be ok for the suite to pass); `figures` are the measured
 * numbers printed beside it (latencies, leaks, RSS) and kept in the JSON.
 */
export interface ReliabilityRow {
  section: 'stress' | 'concurrency' | 'faults' | 'fuzz' | 'security';
  name: string;
  /** Cases or iterations run. */
  n: number;
  ok: boolean;
  /** What was seen, in a few words: "0 hangs, 0 lost outputs", or what went wrong. */
  outcome: string;
  figures?: Record<string, number>;
}

export { withDeadline } from '../test/helpers/deadline.js';
