import { closeSync, constants as fsConstants, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { VmcError } from '../errors.js';
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

/** Opens `path` without following a symlink there; a symlink (or a non-directory where one is needed) fails. */
function openNoFollow(path: string, dir: boolean): number {
  const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW, O_CREAT } = fsConstants; // Node adds O_CLOEXEC itself
  return openSync(path, O_RDONLY | O_NOFOLLOW | (dir ? O_DIRECTORY : O_CREAT), 0o644);
}

/**
 * Bind-mounts host `source` (a file or a directory) at `rel` beneath directory `root`, creating the mount point
 * and its parents, without ever following a symlink beneath `root`. `root` is a VM's share, which the guest can
 * write: a symlink planted there must not redirect a host mount outside it (the class of runc's CVE-2021-30465).
 * Each component is opened relative to its parent's descriptor (through /proc/self/fd, Node having no openat)
 * with O_NOFOLLOW, and the mount goes onto the final descriptor (/proc/PID/fd/N, not canonicalized), so
 * nothing the guest renames in between can move it. Fails with VMC_ERR_CONTAINER_START naming the path.
 */
export async function bindBeneath(
  run: CommandRunner,
  source: string,
  root: string,
  rel: string,
): Promise<void> {
  const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.includes('..'))
    throw new VmcError('VMC_ERR_CONTAINER_START', `bad mount point ${JSON.stringify(rel)} beneath ${root}`);
  const isDir = statSync(source).isDirectory();
  const fds: number[] = [];
  try {
    fds.push(openNoFollow(root, true));
    for (const [i, name] of parts.entries()) {
      const last = i === parts.length - 1;
      const at = `/proc/self/fd/${fds[fds.length - 1]}/${name}`;
      if (!last || isDir) {
        try {
          mkdirSync(at);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        }
      }
      try {
        fds.push(openNoFollow(at, !last || isDir));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ELOOP' || code === 'ENOTDIR' || code === 'EISDIR')
          throw new VmcError(
            'VMC_ERR_CONTAINER_START',
            `refusing to mount ${source} at ${join(root, ...parts.slice(0, i + 1))}: it is a symlink or not a ${!last || isDir ? 'directory' : 'file'} (made from inside the VM?)`,
          );
        throw e;
      }
    }
    await run('mount', [
      '--no-canonicalize',
      '--rbind',
      source,
      `/proc/${process.pid}/fd/${fds[fds.length - 1]}`,
    ]);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}
