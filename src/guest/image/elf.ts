import { readFileSync } from 'node:fs';

/**
 * True when the file is a 64-bit ELF executable without a program interpreter (PT_INTERP), i.e. statically
 * linked. The initramfs has no libc, so a dynamically linked busybox (Debian's `busybox` rather than
 * `busybox-static`) would fail to start as /init.
 */
export function isStaticElf(path: string): boolean {
  const b = readFileSync(path);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) return false;
  const phoff = Number(b.readBigUInt64LE(32));
  const phentsize = b.readUInt16LE(54);
  const phnum = b.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    if (b.readUInt32LE(phoff + i * phentsize) === 3 /* PT_INTERP */) return false;
  }
  return true;
}
