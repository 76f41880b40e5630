import type { At } from './validate.js';

/** The five capability sets of a process. */
export interface Capabilities {
  bounding: string[];
  effective: string[];
  inheritable: string[];
  permitted: string[];
  ambient: string[];
}

const SETS = ['bounding', 'effective', 'inheritable', 'permitted', 'ambient'] as const;

function names(a: At): string[] {
  return a.array().map((n) => {
    const s = n.string();
    if (!/^CAP_[A-Z_]+$/.test(s)) n.fail('a capability name such as CAP_NET_BIND_SERVICE');
    return s;
  });
}

/**
 * `process.capabilities` in both formats Kata's `oci` package accepts: runtime-spec v1.0.0-rc4 (a plain list,
 * applied to all five sets) and rc5 and later (an object with one list per set; missing sets are empty).
 */
export function parseCapabilities(a: At): Capabilities | undefined {
  if (!a.exists()) return undefined;
  if (Array.isArray(a.value)) {
    const all = names(a);
    return {
      bounding: [...all],
      effective: [...all],
      inheritable: [...all],
      permitted: [...all],
      ambient: [...all],
    };
  }
  a.object();
  const out = {} as Capabilities;
  for (const set of SETS) out[set] = a.get(set).exists() ? names(a.get(set)) : [];
  return out;
}
