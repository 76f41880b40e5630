import { homedir } from 'node:os';
import { join } from 'node:path';

/** Where vmcache keeps things. Built once in `cli/main.ts` and injected; no module reads the environment. */
export interface Paths {
  /** Runtime state: one directory per VM under `<runDir>/vm/<id>`. Must be short (Unix socket paths ≤ 107 bytes). */
  runDir: string;
  /** Built guest image (kernel, initramfs, root disk, manifest). */
  imageDir: string;
  /** Downloaded inputs (kernel package) kept between builds. */
  cacheDir: string;
}

/** Default paths: system locations for root, home-relative ones otherwise; overridable through the environment. */
export function defaultPaths(env: NodeJS.ProcessEnv, uid: number): Paths {
  const root = uid === 0;
  const cacheHome = env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  return {
    runDir: env.VMCACHE_RUN_DIR ?? (root ? '/run/vmcache' : join(env.XDG_RUNTIME_DIR ?? '/tmp', 'vmcache')),
    imageDir:
      env.VMCACHE_IMAGE_DIR ?? (root ? '/var/lib/vmcache/image' : join(cacheHome, 'vmcache', 'image')),
    cacheDir:
      env.VMCACHE_CACHE_DIR ?? (root ? '/var/cache/vmcache' : join(cacheHome, 'vmcache', 'downloads')),
  };
}

/** The directory of one VM's state. */
export function vmDir(paths: Paths, id: string): string {
  return join(paths.runDir, 'vm', id);
}
