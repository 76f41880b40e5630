import type { At } from './validate.js';

/** One OCI hook: a program with its argv (args[0] is argv0, as execv's) and environment. */
export interface HookSpec {
  path: string;
  args: string[];
  env: string[];
  /** Seconds; the hook is killed and counts as failed after it. */
  timeout?: number;
}

/** The hook points of the runtime spec, in life-cycle order. */
export const HOOK_KINDS = [
  'prestart',
  'createRuntime',
  'createContainer',
  'startContainer',
  'poststart',
  'poststop',
] as const;
export type HookKind = (typeof HOOK_KINDS)[number];

export type Hooks = Record<HookKind, HookSpec[]>;

/** The longest a hook may run, and the bound of a hook without a timeout (the spec sets none; we never wait unbounded). */
export const MAX_HOOK_TIMEOUT_S = 600;
export const DEFAULT_HOOK_TIMEOUT_S = 120;

/** startContainer hooks the guest helper runs (`hooks[32]` in vmc-helper.c). */
export const MAX_START_HOOKS = 32;

/** No NUL and none of the helper's separators (startContainer hooks travel to the guest as helper arguments). */
const cSafe = (a: At): string => a.helperString();

/** Reads `hooks` (absent kinds are empty); errors name the JSON path, e.g. `hooks.prestart[0].timeout`. */
export function parseHooks(a: At): Hooks {
  const out = Object.fromEntries(HOOK_KINDS.map((k) => [k, [] as HookSpec[]])) as Hooks;
  if (!a.exists()) return out;
  a.object();
  for (const kind of HOOK_KINDS) {
    const list = a.get(kind);
    if (!list.exists()) continue;
    const hooks =
      kind === 'startContainer'
        ? list.arrayOf(MAX_START_HOOKS, 'hooks', "the guest helper's limit")
        : list.array();
    out[kind] = hooks.map((h) => {
      h.object();
      const path = h.get('path').absolutePath();
      cSafe(h.get('path'));
      const hook: HookSpec = {
        path,
        args: h.get('args').optional((x) => x.array().map(cSafe)) ?? [path],
        env: h.get('env').optional((x) => x.array().map(cSafe)) ?? [],
      };
      const t = h.get('timeout');
      if (t.exists()) {
        const s = t.int();
        if (s < 1 || s > MAX_HOOK_TIMEOUT_S) t.fail(`an integer from 1 to ${MAX_HOOK_TIMEOUT_S} (seconds)`);
        hook.timeout = s;
      }
      return hook;
    });
  }
  return out;
}
