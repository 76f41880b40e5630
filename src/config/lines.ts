/**
 * Where each section and key of a TOML text starts, for messages. One pass over the text builds the index, so
 * looking up every key of a file is linear in its size (searching the text once per key was quadratic, and no
 * regular expression is ever built from a key). Best effort: the text has already been parsed by smol-toml, so
 * the scanner only needs to recognise table headers, key paths, strings, brackets and comments.
 */

/** Sub-tables that are sections of their own: Kata's `[agent.kata]` and runtime-rs's `[hypervisor.qemu.factory]`. */
const SUBSECTIONS: ReadonlyMap<string, string> = new Map([
  ['agent', 'kata'],
  ['hypervisor.qemu', 'factory'],
]);

/** The section name vmcache validates (`hypervisor.<name>`, a sub-section or a top-level table) and the key. */
function split(path: string[]): { section: string; key: string | undefined } {
  let section = path[0]!;
  let rest = path.slice(1);
  if (section === 'hypervisor' && rest.length > 0) {
    section = `hypervisor.${rest[0]}`;
    rest = rest.slice(1);
  }
  if (rest.length > 0 && (SUBSECTIONS.get(section) === rest[0] || rest[0]!.endsWith(']'))) {
    // A sub-section, or one table of an array of tables (`pool[2]`, see #scan).
    section = `${section}.${rest[0]}`;
    rest = rest.slice(1);
  }
  return { section, key: rest[0] };
}

/** A bare-key character: A-Z a-z 0-9 _ - (compared by code, no regular expression per character). */
function isBare(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c === 45;
}
const ESCAPES: Record<string, string> = {
  b: '\b',
  t: '\t',
  n: '\n',
  f: '\f',
  r: '\r',
  e: '\x1b',
  '"': '"',
  '\\': '\\',
};
const HEX_DIGITS: Record<string, number> = { x: 2, u: 4, U: 8 };

/** Line numbers (1-based) of sections and of keys within sections; the first mention wins. */
export class LineIndex {
  readonly #sections = new Map<string, number>();
  readonly #keys = new Map<string, Map<string, number>>();
  readonly #text: string;
  /** How many `[[x]]` headers of each path were seen: the Nth table of an array is section `x[N]`. */
  readonly #arrays = new Map<string, number>();
  #i = 0;
  #line = 1;

  constructor(text: string) {
    this.#text = text;
    this.#scan();
  }

  /** Line of `key` in `section`, or of the section when the key was not found (e.g. inside an inline table). */
  line(section: string, key?: string): number | undefined {
    return (key === undefined ? undefined : this.#keys.get(section)?.get(key)) ?? this.#sections.get(section);
  }

  #record(path: string[], line: number): void {
    const { section, key } = split(path);
    if (!this.#sections.has(section)) this.#sections.set(section, line);
    if (key === undefined) return;
    let keys = this.#keys.get(section);
    if (!keys) {
      keys = new Map();
      this.#keys.set(section, keys);
    }
    if (!keys.has(key)) keys.set(key, line);
  }

  #scan(): void {
    const t = this.#text;
    let table: string[] = [];
    while (this.#i < t.length) {
      this.#skipBlanks();
      const c = t[this.#i];
      if (c === undefined) break;
      if (c === '\n') {
        this.#i++;
        this.#line++;
        continue;
      }
      const line = this.#line;
      if (c === '[') {
        const array = t[this.#i + 1] === '[';
        this.#i += array ? 2 : 1;
        let path = this.#keyPath();
        if (path && array) {
          const n = (this.#arrays.get(path.join('.')) ?? 0) + 1;
          this.#arrays.set(path.join('.'), n);
          path = [...path.slice(0, -1), `${path[path.length - 1]}[${n}]`];
        }
        if (path) {
          table = path;
          this.#record(path, line);
        }
        this.#skipRestOfLine();
        continue;
      }
      if (c === '#') {
        this.#skipRestOfLine();
        continue;
      }
      const path = this.#keyPath();
      this.#skipBlanks();
      if (path && t[this.#i] === '=') {
        this.#i++;
        this.#record([...table, ...path], line);
        this.#skipValue();
      } else this.#skipRestOfLine();
    }
  }

  #skipBlanks(): void {
    const t = this.#text;
    while (t[this.#i] === ' ' || t[this.#i] === '\t' || t[this.#i] === '\r') this.#i++;
  }

  #skipRestOfLine(): void {
    const end = this.#text.indexOf('\n', this.#i);
    this.#i = end === -1 ? this.#text.length : end;
  }

  /** A dotted key path (`a."b c".'d'`), or null when the text here is not one. */
  #keyPath(): string[] | null {
    const path: string[] = [];
    for (;;) {
      this.#skipBlanks();
      const part = this.#simpleKey();
      if (part === null) return null;
      path.push(part);
      this.#skipBlanks();
      if (this.#text[this.#i] !== '.') return path;
      this.#i++;
    }
  }

  #simpleKey(): string | null {
    const t = this.#text;
    const c = t[this.#i];
    if (c === '"' || c === "'") return this.#string(c, false);
    const start = this.#i;
    while (this.#i < t.length && isBare(t.charCodeAt(this.#i))) this.#i++;
    return this.#i > start ? t.slice(start, this.#i) : null;
  }

  /**
   * Reads a string starting at its opening quote and returns its value (escapes decoded in basic strings).
   * `multiline` strings (`"""`, `'''`) may span lines; a single-line string ends at a newline at the latest.
   */
  #string(quote: string, multiline: boolean): string | null {
    const t = this.#text;
    const close = multiline ? quote.repeat(3) : quote;
    this.#i += close.length;
    let out = '';
    while (this.#i < t.length) {
      const c = t[this.#i]!;
      if (t.startsWith(close, this.#i)) {
        this.#i += close.length;
        // """a"""" is a string ending in a quote: up to two more quotes belong to the content.
        if (multiline)
          for (let n = 0; n < 2 && t[this.#i] === quote; n++) {
            out += quote;
            this.#i++;
          }
        return out;
      }
      if (c === '\n') {
        if (!multiline) return null;
        this.#line++;
      }
      if (c === '\\' && quote === '"') {
        const e = t[this.#i + 1] ?? '';
        const digits = HEX_DIGITS[e];
        if (digits !== undefined) {
          const code = Number.parseInt(t.slice(this.#i + 2, this.#i + 2 + digits), 16);
          out += Number.isNaN(code) || code > 0x10ffff ? '' : String.fromCodePoint(code);
          this.#i += 2 + digits;
          continue;
        }
        if (Object.hasOwn(ESCAPES, e)) {
          out += ESCAPES[e];
          this.#i += 2;
          continue;
        }
        // A line-ending backslash (multi-line only): the newline is counted on the next round.
        this.#i++;
        continue;
      }
      out += c;
      this.#i++;
    }
    return null;
  }

  /** Skips a value up to the end of its statement, counting the lines of multi-line strings and arrays. */
  #skipValue(): void {
    const t = this.#text;
    let depth = 0;
    while (this.#i < t.length) {
      const c = t[this.#i]!;
      if (c === '"' || c === "'") {
        const multiline = t.startsWith(c.repeat(3), this.#i);
        if (this.#string(c, multiline) === null && !multiline) return; // unterminated: resync at the newline
        continue;
      }
      if (c === '#') {
        this.#skipRestOfLine();
        continue;
      }
      if (c === '\n') {
        if (depth <= 0) return;
        this.#line++;
      } else if (c === '[' || c === '{') depth++;
      else if (c === ']' || c === '}') depth--;
      this.#i++;
    }
  }
}
