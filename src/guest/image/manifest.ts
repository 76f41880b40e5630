import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../../platform/atomic-write.js';

/** Bumped whenever the builder's output changes for the same inputs. */
export const BUILDER_VERSION = 3;

/** File names inside the image directory. */
export const IMAGE_FILES = {
  kernel: 'vmlinux',
  initrd: 'initrd.img',
  rootfs: 'rootfs.img',
  /** The host's pty helper for `--console-socket` (a host binary, built with the image). */
  console: 'vmc-console',
  manifest: 'manifest.json',
} as const;

/** What `manifest.json` records: per stage, the hash of its inputs and a description of them. */
export interface ImageManifest {
  builderVersion: number;
  builtAt: string;
  kernel: { inputsHash: string; package: string; version: string; modules: string[] };
  rootfs: { inputsHash: string; nodeVersion: string; sizeBytes: number };
  /** Absent in images built before the console helper existed (the next build adds it). */
  console?: { inputsHash: string };
}

/** sha256 of a file's bytes, hex. */
export function hashFile(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** sha256 of a JSON-serialisable value. */
export function hashValue(v: unknown): string {
  return createHash('sha256').update(JSON.stringify(v)).digest('hex');
}

/** Reads the manifest, or null when missing or unreadable (a damaged image is rebuilt). */
export function readManifest(imageDir: string): ImageManifest | null {
  try {
    const m = JSON.parse(readFileSync(join(imageDir, IMAGE_FILES.manifest), 'utf8')) as ImageManifest;
    return m.builderVersion === BUILDER_VERSION ? m : null;
  } catch {
    return null;
  }
}

/** Writes the manifest atomically. */
export function writeManifest(imageDir: string, m: ImageManifest): void {
  writeFileAtomic(join(imageDir, IMAGE_FILES.manifest), `${JSON.stringify(m, null, 2)}\n`);
}

/** True when every output file exists and is non-empty. */
export function outputsPresent(imageDir: string, names: readonly string[]): boolean {
  return names.every((n) => {
    const p = join(imageDir, n);
    return existsSync(p) && statSync(p).size > 0;
  });
}
