import { VmcError } from '../errors.js';

/** A JSON value at a path, with typed accessors that fail naming the path (e.g. `process.args[0]`). */
export class At {
  constructor(
    readonly value: unknown,
    readonly path: string,
    readonly file: string,
  ) {}

  /** Fails naming this path. */
  fail(expected: string): never {
    const got = this.value === undefined ? 'nothing' : JSON.stringify(this.value)?.slice(0, 80);
    throw new VmcError(
      'VMC_ERR_OCI_INVALID',
      `${this.file}: ${this.path || '(root)'} must be ${expected}, got ${got}`,
    );
  }

  /** The member `key` (unknown properties elsewhere are ignored, as the runtime spec requires). */
  get(key: string): At {
    const v = this.value as Record<string, unknown> | undefined;
    return new At(v?.[key], this.path ? `${this.path}.${key}` : key, this.file);
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
