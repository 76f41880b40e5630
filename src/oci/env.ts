import { VmcError } from '../errors.js';
import { preview } from './validate.js';

/** One environment variable. */
export interface EnvVar {
  name: string;
  value: string;
}

/** Environment variables as `NAME=value` strings, what exec (and the guest) take. */
export function formatEnv(vars: readonly EnvVar[]): string[] {
  return vars.map((v) => `${v.name}=${v.value}`);
}

/**
 * `process.env` entries, as Kata's `EnvVars` reads them: split at the *first* `=` (values may contain `=`;
 * Kata's private helper truncated them, which we do not copy), surrounding spaces and quotes trimmed, empty names
 * and entries without `=` rejected, naming the entry.
 */
export function parseEnv(entries: string[], file: string): EnvVar[] {
  return entries.map((e, i) => {
    const at = e.indexOf('=');
    if (at < 0)
      throw new VmcError('VMC_ERR_OCI_INVALID', `${file}: process.env[${i}] ${preview(e)} is not NAME=VALUE`);
    const name = e.slice(0, at).trim();
    if (name === '')
      throw new VmcError('VMC_ERR_OCI_INVALID', `${file}: process.env[${i}] ${preview(e)} has an empty name`);
    const value = e
      .slice(at + 1)
      .trim()
      .replace(/^["']+|["']+$/g, '')
      .trim();
    return { name, value };
  });
}
