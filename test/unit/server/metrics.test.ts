import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { PromMetrics } from '../../../src/server/metrics.js';
import { socketPaths, staleSocket, unusable, withUmask } from '../../helpers/endpoints.js';

const fresh = socketPaths('vmc-mx-');

function scrape(socketPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/metrics' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject).end();
  });
}

describe('metrics endpoint', () => {
  const KEY = '[cache] metrics_endpoint';

  it('refuses to replace a regular file, and leaves it alone', async () => {
    const path = fresh('metrics.sock');
    writeFileSync(path, 'precious');
    await assert.rejects(new PromMetrics().serve(path), unusable(KEY, path, /is a file, not a socket/));
    assert.equal(readFileSync(path, 'utf8'), 'precious');
  });

  it('refuses a directory, and a parent that is not a directory', async () => {
    const d = fresh('metrics.sock');
    mkdirSync(d);
    await assert.rejects(new PromMetrics().serve(d), unusable(KEY, d, /is a directory, not a socket/));
    const file = fresh('file');
    writeFileSync(file, 'x');
    const under = join(file, 'metrics.sock');
    await assert.rejects(
      new PromMetrics().serve(under),
      unusable(KEY, under, /parent .* is not a directory/),
    );
    const deeper = join(file, 'a', 'metrics.sock');
    await assert.rejects(
      new PromMetrics().serve(deeper),
      unusable(KEY, deeper, /ancestor .* is not a directory/),
    );
    assert.equal(readFileSync(file, 'utf8'), 'x');
  });

  it('refuses a path too long for a Unix socket instead of binding a truncated one', async () => {
    const path = join(dirname(fresh('x')), 'x'.repeat(120));
    await assert.rejects(
      new PromMetrics().serve(path),
      (e) =>
        isVmcError(e, 'VMC_ERR_CONFIG_INVALID') && e.message.includes(KEY) && /107 bytes/.test(e.message),
    );
  });

  it('replaces a stale socket but never a live one', async () => {
    const path = fresh('metrics.sock');
    staleSocket(path);
    const l = await new PromMetrics().serve(path);
    assert.equal((await scrape(path)).status, 200);
    await assert.rejects(new PromMetrics().serve(path), (e) =>
      isVmcError(e, 'VMC_ERR_CACHE_ENDPOINT_IN_USE'),
    );
    assert.equal((await scrape(path)).status, 200, 'the live server still answers');
    await l.close();
    await l.close();
    assert.equal(existsSync(path), false);
  });

  it('creates its socket with mode 0600 under umask 000, serves /metrics, and removes only its socket', async () => {
    const path = fresh('metrics.sock');
    const l = await withUmask(0, () => new PromMetrics().serve(path));
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const r = await scrape(path);
    assert.equal(r.status, 200);
    assert.match(r.body, /vmcache_pool_ready/);
    await l.close();
    assert.equal(existsSync(path), false);
  });
});
