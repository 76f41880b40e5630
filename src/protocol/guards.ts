/**
 * Type guards the protocol parsers share (agent messages, control messages): each frame is validated once, at
 * the boundary, by these, never walked further than they need.
 */

/** A decoded JSON object. */
export type Obj = Record<string, unknown>;

/** A JSON object (not an array, not null). */
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A non-negative safe integer: an id, a pid, a uid, a count. */
export const isUint = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** An array of strings. */
export const isStrings = (v: unknown): v is string[] =>
  Array.isArray(v) && v.every((s) => typeof s === 'string');

/** One of `values` (a list of literals). */
export const isOneOf = <T>(values: readonly T[], v: unknown): v is T =>
  (values as readonly unknown[]).includes(v);

/** Container ids as runc accepts them. */
const CONTAINER_ID = /^[\w+.-]+$/;

/** A container id as runc accepts it: letters, digits and `+ - . _`, not `.` or `..`, at most 1024 chars. */
export function isContainerId(id: unknown): id is string {
  return typeof id === 'string' && CONTAINER_ID.test(id) && id !== '.' && id !== '..' && id.length <= 1024;
}

/** Longest part of a received string an error message quotes. */
const MAX_SHOWN = 64;

/**
 * A received value as an error message shows it: a string's first characters, quoted, or the value's type;
 * never the whole value, never a walk of it. A frame can carry a megabyte string (an error reply echoing it
 * would exceed MAX_PAYLOAD, and encodeFrame throws) or nest 500,000 levels deep (JSON.stringify overflows the
 * stack): either made the parsers, or the agent's reply, throw in a stream's data handler (found by fuzzing).
 */
export function shownValue(v: unknown): string {
  if (typeof v === 'string')
    return v.length > MAX_SHOWN
      ? `${JSON.stringify(v.slice(0, MAX_SHOWN))}… (${v.length} chars)`
      : JSON.stringify(v);
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' && v !== null ? 'an object' : String(v);
}
