/**
 * Strings handed to the guest's static helper travel as C strings with ASCII unit (0x1f) and record (0x1e)
 * separators between fields: none of the three may occur inside one. Checked by code point, not by a regular
 * expression with control characters.
 */
const UNSAFE = new Set([0x00, 0x1e, 0x1f]);

/** True when `s` can be one field of a helper argument. */
export function isHelperSafe(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (UNSAFE.has(s.charCodeAt(i))) return false;
  return true;
}

/** `s` with every character that cannot be in a helper field replaced by `_`. */
export function helperSafe(s: string): string {
  let out = '';
  for (const ch of s) out += UNSAFE.has(ch.charCodeAt(0)) ? '_' : ch;
  return out;
}
