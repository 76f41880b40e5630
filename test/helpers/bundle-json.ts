import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

/** The smallest config.json readBundle accepts: the base each parsing test changes one field of. */
export const minimalConfig = () => ({
  ociVersion: '1.0.2',
  root: { path: 'rootfs' },
  process: { args: ['/bin/true'], cwd: '/', user: { uid: 0, gid: 0 } },
});

/**
 * Bundle directories for parsing tests: each call writes `text` as config.json beside an empty rootfs, in a
 * directory of its own under one temporary directory removed after the file's tests.
 */
export function bundleDirs(prefix: string): (text: string) => string {
  const root = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(root, { recursive: true, force: true }));
  let n = 0;
  return (text) => {
    const dir = join(root, `b${n++}`);
    mkdirSync(join(dir, 'rootfs'), { recursive: true });
    writeFileSync(join(dir, 'config.json'), text);
    return dir;
  };
}
