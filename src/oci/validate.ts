import { VmcError } from '../errors.js';
import { isHelperSafe } from '../platform/c-string.js';

/**
 * The deepest nesting of arrays and objects a config.json may have, the root object being level 1. Real ones
 * stay under 10 levels; the bound keeps every walk of the document (ours, JSON.stringify of the kept spec)
 * far from the stack's limit, which 100,000 levels reached (found by fuzzing).
 */
export const MAX_DEPTH = 64;

/** Longest key shown in a path of an error message (keys come from the file and have no bound). */
const MAX_KEY_SHOWN = 64;

const shortKey = (k: string): string => (k.length > MAX_KEY_SHOWN ? `${k.slice(0, MAX_KEY_SHOWN)}…` : k);

/**
 * At most `max` characters of `v` as JSON, with `…` when cut, for error messages. Bounded in time and stack
 * whatever `v` is: every level of nesting writes a character first and the walk stops once `max` are written.
 */
export function preview(v: unknown, max = 80): string {
  let out = '';
  const put = (s: string): boolean => {
    out += s;
    return out.length <= max;
  };
  const walk = (x: unknown): boolean => {
    if (typeof x === 'string') return put(JSON.stringify(x.slice(0, max + 1)));
    if (Array.isArray(x)) {
      if (!put('[')) return false;
      for (let i = 0; i < x.length; i++) if ((i > 0 && !put(',')) || !walk(x[i])) return false;
      return put(']');
    }
    if (typeof x === 'object' && x !== null) {
      if (!put('{')) return false;
      let first = true;
      for (const k of Object.keys(x)) {
        if ((!first && !put(',')) || !put(`${JSON.stringify(k.slice(0, max + 1))}:`)) return false;
        first = false;
        if (!walk((x as Record<string, unknown>)[k])) return false;
      }
      return put('}');
    }
    return put(String(JSON.stringify(x) ?? x));
  };
  walk(v);
  return out.length > max ? `${out.slice(0, max)}…` : out;
}

/**
 * Fails when `json` nests arrays and objects more than MAX_DEPTH levels deep, naming the path where it does.
 * Iterative (an explicit stack), so that it is safe at any depth; run before anything walks the document.
 */
export function checkDepth(json: unknown, file: string): void {
  interface Level {
    v: object;
    depth: number;
    key: string | number | null;
    up: Level | null;
  }
  const stack: Level[] = [];
  const push = (v: unknown, depth: number, key: string | number | null, up: Level | null) => {
    if (typeof v === 'object' && v !== null) stack.push({ v, depth, key, up });
  };
  push(json, 1, null, null);
  for (let l = stack.pop(); l; l = stack.pop()) {
    if (l.depth > MAX_DEPTH) {
      const keys: Array<string | number> = [];
      for (let at: Level | null = l; at?.key != null; at = at.up) keys.push(at.key);
      throw new VmcError(
        'VMC_ERR_OCI_INVALID',
        `${file}: ${pathOf(keys.reverse())} nests deeper than ${MAX_DEPTH} levels of arrays and objects`,
      );
    }
    if (Array.isArray(l.v)) for (let i = 0; i < l.v.length; i++) push(l.v[i], l.depth + 1, i, l);
    else for (const [k, x] of Object.entries(l.v)) push(x, l.depth + 1, k, l);
  }
}

/** A JSON path as the messages write it: `process.args[1]`, `annotations["io.x/y"]`. */
function pathOf(keys: ReadonlyArray<string | number>): string {
  let out = '';
  for (const k of keys) {
    if (typeof k === 'number') out += `[${k}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(k)) out += out ? `.${shortKey(k)}` : shortKey(k);
    else out += `[${JSON.stringify(shortKey(k))}]`;
  }
  return out || '(root)';
}

/** A JSON value at a path, with typed accessors that fail naming the path (e.g. `process.args[0]`). */
export class At {
  constructor(
    readonly value: unknown,
    readonly path: string,
    readonly file: string,
  ) {}

  /** Fails naming this path. */
  fail(expected: string, got?: string): never {
    const shown = got ?? (this.value === undefined ? 'nothing' : preview(this.value));
    throw new VmcError(
      'VMC_ERR_OCI_INVALID',
      `${this.file}: ${this.path || '(root)'} must be ${expected}, got ${shown}`,
    );
  }

  /** The member `key` (unknown properties elsewhere are ignored, as the runtime spec requires). */
  get(key: string): At {
    const v = this.value as Record<string, unknown> | undefined;
    const k = shortKey(key);
    return new At(v?.[key], this.path ? `${this.path}.${k}` : k, this.file);
  }

  exists(): boolean {
    return this.value !== undefined && this.value !== null;
  }

  object(): Record<string, unknown> {
    if (typeof this.value !== 'object' || this.value === null || Array.isArray(this.value))
      this.fail('an object');
    return this.value as Record<string, unknown>;
  }

  array(): At[] {
    if (!Array.isArray(this.value)) this.fail('an array');
    return (this.value as unknown[]).map((v, i) => new At(v, `${this.path}[${i}]`, this.file));
  }

  string(): string {
    if (typeof this.value !== 'string') this.fail('a string');
    return this.value as string;
  }

  nonEmptyString(): string {
    const s = this.string();
    if (s === '') this.fail('a non-empty string');
    return s;
  }

  absolutePath(): string {
    const s = this.string();
    if (!s.startsWith('/')) this.fail('an absolute path');
    return s;
  }

  /** A string without NUL: one that can be a C string (an argv or environment string, a host path). */
  cString(what = 'a string'): string {
    const s = this.string();
    if (s.includes('\u0000')) this.fail(`${what} without NUL`);
    return s;
  }

  /** A string that can be one field of a guest helper argument: no NUL and none of its separators. */
  helperString(): string {
    const s = this.string();
    if (!isHelperSafe(s)) this.fail('a string without NUL or ASCII separator characters');
    return s;
  }

  /** An absolute path inside the container that cannot climb out of its root and can be a helper field. */
  containerPath(): string {
    const s = this.absolutePath();
    if (!isHelperSafe(s) || s.split('/').includes('..'))
      this.fail('an absolute path without .. or control separators');
    return s;
  }

  /** An array of at most `max` elements; `what` names them in the error (`mounts`). */
  arrayOf(max: number, what: string, why: string): At[] {
    const items = this.array();
    if (items.length > max) this.fail(`at most ${max} ${what} (${why})`, `${items.length}`);
    return items;
  }

  uint(max = 2 ** 32 - 1): number {
    if (typeof this.value !== 'number' || !Number.isInteger(this.value) || this.value < 0 || this.value > max)
      this.fail(`an integer from 0 to ${max}`);
    return this.value as number;
  }

  int(): number {
    if (typeof this.value !== 'number' || !Number.isSafeInteger(this.value)) this.fail('an integer');
    return this.value as number;
  }

  bool(): boolean {
    if (typeof this.value !== 'boolean') this.fail('true or false');
    return this.value as boolean;
  }

  strings(): string[] {
    return this.array().map((a) => a.string());
  }

  /** A string→string map (annotations). */
  stringMap(): Record<string, string> {
    const o = this.object();
    for (const k of Object.keys(o)) this.get(k).string();
    return o as Record<string, string>;
  }

  optional<T>(fn: (a: At) => T): T | undefined {
    return this.exists() ? fn(this) : undefined;
  }
}
