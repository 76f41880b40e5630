import type { Timestamp } from '../protocol/shim/generated/google/protobuf/timestamp.js';

/** A protobuf Timestamp of a wall-clock time in ms since the epoch. */
export function timestampOf(ms: number): Timestamp {
  const seconds = Math.floor(ms / 1000);
  return { seconds: BigInt(seconds), nanos: Math.round((ms - seconds * 1000) * 1e6) };
}
