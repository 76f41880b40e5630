import { type EnvVar, parseEnv } from './env.js';
import type { At } from './validate.js';

/** The highest uid or gid: 2^32-1 is (uid_t)-1, which the kernel reads as "no id" (setuid(-1) changes nothing). */
export const MAX_ID = 2 ** 32 - 2;

/** Supplementary groups the guest helper sets (`gid_t gl[64]` in vmc-helper.c; more would be dropped). */
export const MAX_ADDITIONAL_GIDS = 64;

/** What an OCI `process` object says runs, and as whom. */
export interface ProcessSpec {
  args: string[];
  env: EnvVar[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids: number[];
}

/**
 * `args`, `env`, `cwd` and `user` of the OCI process object at `p` (config.json's `process`, or the file of
 * `exec --process`), checked as the guest helper takes them: argv, environment and cwd go to it whole, as C
 * strings, so only NUL cannot be in them. config.json's must name a program and a user; an exec's may leave out
 * the user (root, as runc's exec does) and `args` (its caller refuses an empty command in its own words).
 */
export function parseProcess(p: At, file: string, kind: 'config' | 'exec' = 'config'): ProcessSpec {
  const args = p
    .get('args')
    .array()
    .map((a) => a.cString());
  if (kind === 'config' && (args.length === 0 || args[0] === ''))
    p.get('args').fail('a non-empty array whose first element names the program');
  const user = p.get('user');
  if (kind === 'config' || user.exists()) user.object();
  const hasUser = user.exists();
  return {
    args,
    env: parseEnv(p.get('env').optional((e) => e.array().map((x) => x.cString())) ?? [], file),
    cwd: cwdOf(p.get('cwd')),
    uid: hasUser ? user.get('uid').uint(MAX_ID) : 0,
    gid: hasUser ? user.get('gid').uint(MAX_ID) : 0,
    additionalGids: hasUser
      ? (user
          .get('additionalGids')
          .optional((g) =>
            g
              .arrayOf(MAX_ADDITIONAL_GIDS, 'group ids', 'the guest helper sets at most that many')
              .map((x) => x.uint(MAX_ID)),
          ) ?? [])
      : [],
  };
}

/** `process.cwd`: an absolute path, and a C string for the helper. */
function cwdOf(a: At): string {
  a.absolutePath();
  return a.cString('an absolute path');
}
