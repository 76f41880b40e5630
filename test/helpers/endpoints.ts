import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { isVmcError } from '../../src/errors.js';

/**
 * Fresh paths for sockets of one test file: each in a directory of its own under one short temporary
 * directory (socket paths must stay under 107 bytes), removed after the file's tests.
 */
export function socketPaths(prefix: string): (name: string) => string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  return (name) => {
    const d = join(dir, String(++n));
    mkdirSync(d);
    return join(d, name);
  };
}

/** A socket file nobody listens on (its process exited without closing it), as a crashed server leaves. */
export function staleSocket(path: string): void {
  const r = spawnSync(process.execPath, [
    '-e',
    `require('net').createServer().listen(${JSON.stringify(path)}, () => process.exit(0))`,
  ]);
  assert.equal(r.status, 0, String(r.stderr));
  assert.ok(lstatSync(path).isSocket());
}

/** Runs `fn` with the process umask set to `mask`. */
export function withUmask<T>(mask: number, fn: () => Promise<T>): Promise<T> {
  const old = process.umask(mask);
  return fn().finally(() => process.umask(old));
}

/** An assert.rejects/throws predicate: VMC_ERR_CACHE_ENDPOINT_UNUSABLE naming `key` and `path`, matching `re`. */
export const unusable = (key: string, path: string, re: RegExp) => (e: unknown) =>
  isVmcError(e, 'VMC_ERR_CACHE_ENDPOINT_UNUSABLE') &&
  e.message.includes(key) &&
  e.message.includes(path) &&
  re.test(e.message);
