import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultSpec } from '../../src/cli/runtime/spec.js';

/** A busybox root file system (Debian's busybox-static plus its applet links), made once per directory. */
export function busyboxRootfs(dir: string): string {
  const rootfs = join(dir, 'rootfs');
  mkdirSync(join(rootfs, 'bin'), { recursive: true });
  mkdirSync(join(rootfs, 'tmp'), { recursive: true });
  mkdirSync(join(rootfs, 'etc'), { recursive: true });
  copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
  const applets = execFileSync('/bin/busybox', ['--list'], { encoding: 'utf8' })
    .split('\n')
    .filter((a) => a && a !== 'busybox');
  for (const a of applets) symlinkSync('busybox', join(rootfs, 'bin', a));
  writeFileSync(
    join(rootfs, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n',
  );
  return rootfs;
}

/** What a test bundle's config.json changes from `vmcache spec`'s default. */
export interface BundleOptions {
  args: string[];
  env?: string[];
  cwd?: string;
  user?: { uid: number; gid: number; additionalGids?: number[] };
  hostname?: string;
  readonly?: boolean;
  terminal?: boolean;
  annotations?: Record<string, string>;
  /** Extra mounts appended to the default ones. */
  mounts?: unknown[];
  /** A network namespace to join (`linux.namespaces` network path). */
  netns?: string;
  /** `linux.resources`. */
  resources?: Record<string, unknown>;
}

/**
 * An OCI bundle at `dir` (config.json from `vmcache spec`'s default, changed by `o`) whose rootfs is the
 * busybox tree at `rootfs` (several bundles may share one; the path is absolute).
 */
export function busyboxBundle(dir: string, rootfs: string, o: BundleOptions): string {
  mkdirSync(dir, { recursive: true });
  const spec = defaultSpec() as {
    process: Record<string, unknown>;
    root: Record<string, unknown>;
    mounts: unknown[];
    [k: string]: unknown;
  };
  spec.process.args = o.args;
  if (o.env) spec.process.env = [...(spec.process.env as string[]), ...o.env];
  if (o.cwd) spec.process.cwd = o.cwd;
  if (o.user) spec.process.user = o.user;
  if (o.terminal) spec.process.terminal = true;
  if (o.hostname) spec.hostname = o.hostname;
  if (o.annotations) spec.annotations = o.annotations;
  if (o.mounts) spec.mounts = [...spec.mounts, ...o.mounts];
  if (o.netns) {
    const linux = spec.linux as { namespaces: Array<{ type: string; path?: string }> };
    linux.namespaces = linux.namespaces.map((n) =>
      n.type === 'network' ? { type: 'network', path: o.netns } : n,
    );
  }
  if (o.resources) (spec.linux as Record<string, unknown>).resources = o.resources;
  spec.root = { path: rootfs, readonly: o.readonly ?? true };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(spec, null, 2));
  return dir;
}
