/**
 * A writer for the cpio "newc" format (what the kernel unpacks as an initramfs). Written here because the npm
 * cpio packages compute name lengths in UTF-16 units, not bytes, and corrupt names (ts-ecosystem.md §h).
 * Entries are written in the order given; parents must come before children.
 */

/** One archive entry. `mode` holds only permission bits; the type comes from `kind`. */
export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Buffer; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'chardev'; path: string; major: number; minor: number; mode?: number };

const TYPE = { dir: 0o040000, file: 0o100000, symlink: 0o120000, chardev: 0o020000 } as const;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function pad4(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

/** Serialises entries (plus the trailer) into one newc archive. */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (path: string, mode: number, data: Buffer, rdev: [number, number] = [0, 0], nlink = 1) => {
    const name = Buffer.from(`${path}\0`, 'utf8');
    const header =
      '070701' +
      hex8(ino++) +
      hex8(mode) +
      hex8(0) + // uid
      hex8(0) + // gid
      hex8(nlink) +
      hex8(0) + // mtime: fixed, so that the archive is reproducible
      hex8(data.length) +
      hex8(0) + // devmajor
      hex8(0) + // devminor
      hex8(rdev[0]) +
      hex8(rdev[1]) +
      hex8(name.length) +
      hex8(0); // check
    const h = Buffer.from(header, 'latin1');
    parts.push(h, name, pad4(h.length + name.length), data, pad4(data.length));
  };
  for (const e of entries) {
    const path = e.path.replace(/^\/+/, '');
    if (path === '' || path.split('/').includes('..'))
      throw new Error(`invalid cpio path ${JSON.stringify(e.path)}`);
    switch (e.kind) {
      case 'dir':
        push(path, TYPE.dir | (e.mode ?? 0o755), Buffer.alloc(0), [0, 0], 2);
        break;
      case 'file':
        push(path, TYPE.file | (e.mode ?? 0o644), e.data);
        break;
      case 'symlink':
        push(path, TYPE.symlink | 0o777, Buffer.from(e.target, 'utf8'));
        break;
      case 'chardev':
        push(path, TYPE.chardev | (e.mode ?? 0o600), Buffer.alloc(0), [e.major, e.minor]);
        break;
    }
  }
  ino = 0;
  push('TRAILER!!!', 0, Buffer.alloc(0), [0, 0], 1);
  return Buffer.concat(parts);
}
