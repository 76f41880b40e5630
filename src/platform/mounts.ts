import { readFileSync } from 'node:fs';
import type { CommandRunner } from './command.js';

/** Decodes the octal escapes /proc/mounts (and mountinfo) use for spaces and the like. */
export function unescapeMount(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/** Mount points at or below `dir`, deepest first. */
export function mountsUnder(dir: string, mountsText = readFileSync('/proc/mounts', 'utf8')): string[] {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return mountsText
    .split('\n')
    .map((l) => unescapeMount(l.split(' ')[1] ?? ''))
    .filter((m) => m === dir || m.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

/**
 * Unmounts everything at or below `dir` (deepest first) so that removing `dir` can never delete files of a
 * bind-mounted source. Returns the mounts that could not be removed.
 */
export async function unmountAllUnder(run: CommandRunner, dir: string): Promise<string[]> {
  for (const m of mountsUnder(dir)) {
    await run('umount', [m]).catch(() => run('umount', ['-l', m]).catch(() => undefined));
  }
  return mountsUnder(dir);
}
