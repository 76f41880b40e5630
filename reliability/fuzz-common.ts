/**
 * The fuzz section's harness: one seeded fast-check property per target, each case classified as accepted or
 * refused (with a clear error), anything else a failure with its counterexample; a liveness probe after every
 * batch; process-wide traps for what a target lets escape (a throw in an event handler, an unhandled
 * rejection). The hostile values every target draws from are here too.
 */
import fc from 'fast-check';
import { isVmcError } from '../src/errors.js';
import { type ReliabilityRow, withDeadline } from './report.js';

/** What `fuzzRows` is given: the seed of every property, and how many cases each target runs at least. */
export interface FuzzOptions {
  seed: number;
  cases: number;
  log: (s: string) => void;
}

/** How a case ended when it kept the property: accepted, or refused with a clear error. */
export type Verdict = 'accepted' | 'refused';

/** A broken promise: `crash` (a throw that is not a refusal, an escape) or `violation` (a hang, a leak...). */
export class CaseFailure extends Error {
  constructor(
    readonly kind: 'crash' | 'violation',
    message: string,
  ) {
    super(message);
  }
}

/** Cases between two liveness probes (the brief: "a good request after every batch of ~50 cases"). */
export const BATCH = 50;
/** A good request after a batch answers within this. */
export const PROBE_MS = 1_000;
/** Longest a case may take: far above any of them (a few ms), far below a hang or a super-linear parse. */
export const CASE_MS = 2_000;

/** One fuzz target: its inputs, how a case runs, the liveness probe and the final checks. */
export interface Target<T> {
  arbitrary: fc.Arbitrary<T>;
  /** Runs one case; throws CaseFailure when the property does not hold (any other throw counts as a crash). */
  run(input: T): Promise<Verdict>;
  /** A good request; throws unless it is answered within PROBE_MS. */
  probe(): Promise<void>;
  /** After the last case: what was left behind or grew (empty when nothing). */
  finish(): Promise<string[]>;
  /** Releases the target's sockets and directories; idempotent. */
  close(): Promise<void>;
  /** Figures of the target's own, added to the row's (filled by the time `finish` returns). */
  readonly figures?: Record<string, number>;
  /** Remarks for the outcome that are not failures (filled by the time `finish` returns). */
  readonly notes?: string[];
}

/** Lets I/O callbacks and promise continuations run, so that a throw in one of them surfaces now. */
export async function settle(rounds = 3): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/** `e` in one line with where it was thrown: enough to find the bug. */
export function describeError(e: unknown): string {
  if (!(e instanceof Error)) return `non-error ${String(e).slice(0, 200)}`;
  const at = (e.stack ?? '')
    .split('\n')
    .slice(1, 4)
    .map((l) =>
      l
        .trim()
        .replace(/^at /, '')
        .replace(/file:\/\/\S*?\/(src|reliability|test)\//, '$1/'),
    )
    .join(' < ');
  const code = isVmcError(e) ? ` ${e.code}` : '';
  return `${e.name}${code}: ${e.message.slice(0, 200)}${at ? ` (at ${at})` : ''}`;
}

/** At most `max` characters of fast-check's rendering of `v`. */
export function shown(v: unknown, max = 300): string {
  const s = fc.stringify(v);
  return s.length > max ? `${s.slice(0, max)}… (${s.length} chars)` : s;
}

/**
 * Errors that escape a target while it runs: thrown from an event handler (`uncaughtException`) or rejected
 * without a handler. Installed only for the duration of one row, so nothing else is affected.
 */
class CrashTrap {
  readonly escaped: unknown[] = [];
  readonly #onError = (e: unknown) => void this.escaped.push(e);
  install(): void {
    process.on('uncaughtException', this.#onError);
    process.on('unhandledRejection', this.#onError);
  }
  remove(): void {
    process.off('uncaughtException', this.#onError);
    process.off('unhandledRejection', this.#onError);
  }
}

/** What a case added to Object.prototype (prototype pollution), or null. */
function pollution(before: ReadonlySet<string>): string | null {
  const added = Object.getOwnPropertyNames(Object.prototype).filter((n) => !before.has(n));
  return added.length ? `Object.prototype gained ${added.slice(0, 5).join(', ')}` : null;
}

/**
 * Runs `target` as a seeded property of at least `opts.cases` cases, within `budgetMs`, and makes its row.
 * Counts are of the cases run before the first failure (fast-check's shrinking reruns are not counted).
 */
export async function runTarget<T>(
  opts: FuzzOptions,
  name: string,
  budgetMs: number,
  make: () => Promise<Target<T>>,
): Promise<ReliabilityRow> {
  const t0 = performance.now();
  const tally = { cases: 0, accepted: 0, refused: 0, crashes: 0 };
  const trap = new CrashTrap();
  trap.install();
  const prototypeNames = new Set(Object.getOwnPropertyNames(Object.prototype));
  let target: Target<T> | null = null;
  let firstFailure: CaseFailure | null = null;
  let row: ReliabilityRow;
  try {
    row = await withDeadline(`fuzz ${name}`, budgetMs + 10_000, async () => {
      target = await make();
      const t = target;
      opts.log(`fuzz ${name}: seed ${opts.seed}, ${opts.cases} cases`);
      const property = fc.asyncProperty(t.arbitrary, async (input) => {
        const counting = firstFailure === null;
        const escapedBefore = trap.escaped.length;
        let verdict: Verdict;
        try {
          const started = performance.now();
          verdict = await withDeadline('case', CASE_MS, () => t.run(input)).catch((e: unknown) => {
            const hang = e instanceof Error && e.message === `case: no result within ${CASE_MS} ms`;
            throw hang ? new CaseFailure('violation', `no result within ${CASE_MS} ms (a hang)`) : e;
          });
          await settle();
          const ms = performance.now() - started;
          if (trap.escaped.length > escapedBefore)
            throw new CaseFailure('crash', `escaped: ${describeError(trap.escaped[escapedBefore])}`);
          const polluted = pollution(prototypeNames);
          if (polluted) throw new CaseFailure('violation', polluted);
          if (ms > CASE_MS) throw new CaseFailure('violation', `the case took ${Math.round(ms)} ms`);
          if (counting && (tally.cases + 1) % BATCH === 0) {
            try {
              await t.probe();
            } catch (e) {
              throw new CaseFailure(
                'violation',
                `not serving after case ${tally.cases + 1}: ${describeError(e)}`,
              );
            }
          }
        } catch (e) {
          const f = e instanceof CaseFailure ? e : new CaseFailure('crash', describeError(e));
          if (counting) {
            firstFailure = f;
            tally.cases++;
            if (f.kind === 'crash') tally.crashes++;
          }
          throw f;
        }
        if (counting) {
          tally.cases++;
          tally[verdict]++;
        }
      });
      const details = await fc.check(property, {
        seed: opts.seed,
        numRuns: opts.cases,
        plugins: [fc.interruptAfterTimeLimit(budgetMs, { failOnInterrupt: true })],
      });
      const problems = details.failed ? [] : await t.finish();
      const ms = Math.round(performance.now() - t0);
      const figures = { ...tally, ...t.figures, ms };
      const counts = `${tally.accepted} accepted, ${tally.refused} refused, ${tally.crashes} crashes`;
      if (details.failed) {
        const why =
          details.errorInstance instanceof Error
            ? details.errorInstance.message
            : details.interrupted
              ? `interrupted after ${budgetMs} ms`
              : 'failed';
        const replay = `seed ${details.seed}, path "${details.counterexamplePath}"`;
        const example = details.counterexample ? shown((details.counterexample as unknown[])[0]) : 'none';
        const outcome = `${replay}: ${why}; counterexample (after ${details.numShrinks} shrinks) ${example}; ${counts}`;
        opts.log(`fuzz ${name}: FAILED ${outcome}`);
        return { section: 'fuzz', name, n: tally.cases, ok: false, outcome, figures };
      }
      const notes = t.notes?.length ? ` (${t.notes.join('; ')})` : '';
      const outcome = problems.length
        ? `seed ${opts.seed}: ${problems.join('; ')}; ${counts}${notes}`
        : `seed ${opts.seed}: ${counts}, served after every ${BATCH}, nothing left behind${notes}`;
      opts.log(`fuzz ${name}: ${outcome} (${ms} ms)`);
      return { section: 'fuzz', name, n: tally.cases, ok: problems.length === 0, outcome, figures };
    });
  } catch (e) {
    const outcome = `seed ${opts.seed}: ${describeError(e)}`;
    opts.log(`fuzz ${name}: FAILED ${outcome}`);
    const figures = { ...tally, ms: Math.round(performance.now() - t0) };
    row = { section: 'fuzz', name, n: tally.cases, ok: false, outcome, figures };
  } finally {
    await (target as Target<T> | null)?.close().catch(() => undefined);
    await settle();
    trap.remove();
  }
  return row;
}

// ---- hostile values, shared by the targets ----

/** Names that find a member of Object.prototype when an object is indexed with them. */
export const PROTOTYPE_NAMES = [
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'valueOf',
  'hasOwnProperty',
  'isPrototypeOf',
  '__defineGetter__',
  '__lookupGetter__',
  'toJSON',
] as const;

/** A piece of JSON text put as is where a value would be (what values cannot express: 1e400, 100k levels). */
export class Raw {
  constructor(readonly text: string) {}
  [fc.toStringMethod](): string {
    return `raw(${this.text.length > 60 ? `${this.text.slice(0, 60)}… ${this.text.length} chars` : this.text})`;
  }
}

/** `v` as JSON text, each Raw written as its text. */
export function toJson(v: unknown): string {
  const raws: string[] = [];
  const text = JSON.stringify(v, (_k, x: unknown) =>
    x instanceof Raw ? `\u0000raw${raws.push(x.text) - 1}\u0000` : x,
  );
  return raws.length ? text.replace(/"\\u0000raw(\d+)\\u0000"/g, (_m, i: string) => raws[Number(i)]!) : text;
}

/** A copy of `o` with own property `k` (defined, so that `__proto__` is a key and not the prototype). */
export function withKey<O extends object>(o: O, k: string, v: unknown): O {
  const out = Array.isArray(o) ? ([...o] as unknown as O) : { ...o };
  Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  return out;
}

const CONTROL_CHARS = [
  '\u0000',
  '\u0001',
  '\u0008',
  '\t',
  '\n',
  '\r',
  '\u001b',
  '\u001e',
  '\u001f',
  '\u007f',
  '\u0085',
  '\u2028',
  '\ufeff',
  '\ud800',
  '\udfff',
];

/** Lengths that cross the limits that matter: a path, a header, a frame after escaping, a frame. */
const HUGE_LENGTH = fc.oneof(
  fc.integer({ min: 300, max: 5_000 }),
  fc.constantFrom(4_097, 70_000, 160_000, 270_000, 400_000),
);

/** Long runs of one character, including those JSON escapes to 2 or 6 bytes. */
export const hugeString = fc
  .tuple(fc.constantFrom('a', '"', '\\', '\u0000', 'é', '/', 'ab/', '\u{1F600}'), HUGE_LENGTH)
  .map(([c, n]) => c.repeat(Math.max(1, Math.floor(n / c.length))));

/** Strings a validator must cope with. */
export const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.string() },
  { weight: 2, arbitrary: fc.string({ unit: 'binary' }) },
  { weight: 2, arbitrary: fc.constantFrom(...PROTOTYPE_NAMES) },
  {
    weight: 2,
    arbitrary: fc.string({
      unit: fc.constantFrom(...CONTROL_CHARS, 'a', '/', '.', '=', ' ', '"', '\\', ':', ','),
      minLength: 1,
      maxLength: 40,
    }),
  },
  { weight: 1, arbitrary: hugeString },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      '',
      ' ',
      '/',
      '..',
      '/..',
      '/a/../../etc',
      '../../etc/passwd',
      '/proc/self/ns/net',
      '/proc/self/ns/ipc',
      'rootfs',
      '-1',
      'NaN',
      'Infinity',
      '1e3',
      '0x10',
      'true',
      'null',
      '%s%n',
      '$(id)',
      '\u{1F600}',
    ),
  },
);

/** Numbers (and number-like strings) a validator must cope with. */
export const badNumber: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(
    -1,
    -0,
    0.5,
    1.5,
    2 ** 31,
    2 ** 32,
    2 ** 32 - 1,
    2 ** 53,
    2 ** 53 + 2,
    2 ** 63,
    2 ** 64,
    1e308,
  ),
  fc.constantFrom(-(2 ** 63), Number.MIN_VALUE, -1e308),
  fc.integer(),
  fc.double(), // NaN and ±Infinity become null in JSON
  fc.constantFrom('NaN', 'Infinity', '-1', '1e3', '0x10', '', ' 1', '1_000'),
  fc
    .constantFrom('1e400', '-1e400', '18446744073709551616', '18446744073709551615', '-0', '1E-400')
    .map((t) => new Raw(t)),
);

/** Arrays or objects `depth` levels deep: built as text past what a value can be stringified at. */
export const deepNesting: fc.Arbitrary<unknown> = fc
  .tuple(
    fc.oneof(fc.integer({ min: 2, max: 200 }), fc.constantFrom(65, 1_000, 5_000, 20_000, 150_000)),
    fc.boolean(),
  )
  .map(([n, arrays]) =>
    arrays ? new Raw(`${'['.repeat(n)}${']'.repeat(n)}`) : new Raw(`${'{"a":'.repeat(n)}1${'}'.repeat(n)}`),
  );

/** An array of many copies of a small value. */
export const hugeArray: fc.Arbitrary<unknown[]> = fc
  .tuple(fc.constantFrom(200, 1_000, 20_000), fc.oneof(fc.constant('x'), fc.constant(0), fc.constant({})))
  .map(([n, v]) => Array.from({ length: n }, () => v));

/** An object holding prototype-named keys. */
export const prototypeObject: fc.Arbitrary<object> = fc
  .array(fc.tuple(fc.constantFrom(...PROTOTYPE_NAMES), fc.jsonValue({ maxDepth: 1 })), {
    minLength: 1,
    maxLength: 3,
  })
  .map((kvs) => kvs.reduce<object>((o, [k, v]) => withKey(o, k, v), {}));

/** Any of the above, or a value of the wrong type. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: hostileString },
  { weight: 3, arbitrary: badNumber },
  { weight: 2, arbitrary: fc.constantFrom(null, true, false, [], {}, [null], [''], ['a', 1]) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 1, arbitrary: deepNesting },
  { weight: 1, arbitrary: hugeArray },
  { weight: 1, arbitrary: prototypeObject },
);

/** A small non-negative integer or a hostile value (ids, pids, counts). */
export const someId: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.nat({ max: 5 }) },
  { weight: 1, arbitrary: fc.nat() },
  { weight: 2, arbitrary: hostileValue },
);

/**
 * `base` with up to three fields replaced, added or removed: the mutations every message generator applies.
 * `keys` are the fields to pick from (prototype names are added).
 */
export function mutated<O extends object>(base: fc.Arbitrary<O>, keys: readonly string[]): fc.Arbitrary<O> {
  const change = fc.tuple(
    fc.constantFrom(...keys, ...PROTOTYPE_NAMES),
    fc.option(hostileValue, { freq: 6, nil: undefined }),
  );
  return fc.tuple(base, fc.array(change, { maxLength: 3 })).map(([o, changes]) => {
    let out = o;
    for (const [k, v] of changes) {
      if (v === undefined) {
        out = { ...out };
        delete (out as Record<string, unknown>)[k];
      } else out = withKey(out, k, v);
    }
    return out;
  });
}
