import { createHash } from 'node:crypto';
import { join } from 'node:path';

/**
 * The control socket of container `id` under state root `root`. It lives in `<runDir>/ctl/` under a hash of
 * root and id, because a runc-style root plus a 64-hex id (containerd's) would exceed the 107-byte limit of
 * Unix socket paths.
 */
export function controlSocketPath(runDir: string, root: string, id: string): string {
  const h = createHash('sha256').update(`${root}\0${id}`).digest('hex').slice(0, 24);
  return join(runDir, 'ctl', `${h}.sock`);
}
