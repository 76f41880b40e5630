import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { VmcError } from '../../errors.js';
import { writeFileAtomic } from '../../platform/atomic-write.js';
import type { CommandRunner } from '../../platform/command.js';

/**
 * The guest kernel comes from Debian's `linux-image-amd64` (the generic flavour), downloaded and unpacked,
 * never installed. Not `linux-image-cloud-amd64`: that flavour is built without 9p (`CONFIG_NET_9P` unset) and
 * without vmgenid, and vmcache needs both (the per-VM shared directory; automatic RNG reseed of clones).
 */
export const KERNEL_META_PACKAGE = 'linux-image-amd64';

/** Resolves the metapackage to the versioned kernel package (e.g. `linux-image-6.1.0-56-amd64`). */
export async function resolveKernelPackage(run: CommandRunner, meta = KERNEL_META_PACKAGE): Promise<string> {
  const { stdout } = await run('apt-cache', ['depends', meta], { errorCode: 'VMC_ERR_IMAGE_BUILD' });
  const m = /Depends:\s*(linux-image-[0-9][^\s]*)/.exec(stdout.toString());
  if (!m) {
    throw new VmcError(
      'VMC_ERR_IMAGE_BUILD',
      `apt-cache knows no kernel behind ${meta}; run 'apt-get update' first`,
    );
  }
  return m[1]!;
}

/** Downloads the kernel package into `cacheDir` unless a .deb of it is already there; returns its path. */
export async function fetchKernelDeb(run: CommandRunner, pkg: string, cacheDir: string): Promise<string> {
  mkdirSync(cacheDir, { recursive: true });
  const existing = () =>
    readdirSync(cacheDir)
      .filter((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'))
      .sort();
  if (existing().length === 0) {
    await run('apt-get', ['download', pkg], { cwd: cacheDir, errorCode: 'VMC_ERR_IMAGE_BUILD' });
  }
  const debs = existing();
  if (debs.length === 0)
    throw new VmcError('VMC_ERR_IMAGE_BUILD', `apt-get download ${pkg} produced no .deb in ${cacheDir}`);
  return join(cacheDir, debs[debs.length - 1]!);
}

/** XZ stream magic; Debian's bzImage carries the kernel as one XZ stream. */
const XZ_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);

/**
 * Extracts the uncompressed ELF kernel from a bzImage. QEMU boots it through its PVH entry point, which skips
 * the in-guest XZ decompression: about 3 s less per cold boot under TCG (research §0).
 */
export async function extractVmlinux(run: CommandRunner, bzImage: string, out: string): Promise<void> {
  const data = readFileSync(bzImage);
  const at = data.indexOf(XZ_MAGIC);
  if (at < 0) throw new VmcError('VMC_ERR_IMAGE_BUILD', `${bzImage} holds no XZ-compressed kernel`);
  const { stdout } = await run('xz', ['-dc', '--single-stream'], {
    input: data.subarray(at),
    errorCode: 'VMC_ERR_IMAGE_BUILD',
  });
  if (stdout.length < 1024 || stdout.readUInt32BE(0) !== 0x7f454c46) {
    throw new VmcError('VMC_ERR_IMAGE_BUILD', `decompressed kernel from ${bzImage} is not an ELF file`);
  }
  writeFileAtomic(out, stdout);
}

/** The kernel version directory under `lib/modules` of an unpacked package. */
export function kernelVersion(unpacked: string): string {
  const dir = join(unpacked, 'lib', 'modules');
  const versions = existsSync(dir) ? readdirSync(dir) : [];
  if (versions.length !== 1)
    throw new VmcError('VMC_ERR_IMAGE_BUILD', `expected one kernel under ${dir}, found ${versions.length}`);
  return versions[0]!;
}
