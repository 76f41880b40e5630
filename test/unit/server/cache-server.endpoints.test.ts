import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import type { PoolSet } from '../../../src/factory/pool-set.js';
import { systemClock } from '../../../src/platform/clock.js';
import { runCommand } from '../../../src/platform/command.js';
import { nullLogger } from '../../../src/platform/logger.js';
import { CacheServer } from '../../../src/server/cache-server.js';
import { PromMetrics } from '../../../src/server/metrics.js';
import { socketPaths, staleSocket, withUmask } from '../../helpers/endpoints.js';

const fresh = socketPaths('vmc-ep-');

/** A pool stand-in: the server only starts and closes it here. */
const pool = { start() {}, async close() {}, config: () => ({}) } as unknown as PoolSet;
const deps = {
  paths: { runDir: dirname(fresh('run')), imageDir: '/img', cacheDir: '/c' },
  clock: systemClock,
  logger: nullLogger,
  run: runCommand,
};
const serverOpts = (endpoint: string, metricsEndpoint = '') => ({
  endpoint,
  leaseTimeoutMs: 1_000,
  agentDialTimeoutMs: 1_000,
  metricsEndpoint,
});

/**
 * Starts a CacheServer in a child process and returns what start() threw. The child must exit by itself: a
 * failed start that leaves a listener open keeps `factory init` running forever.
 */
function startInChild(endpoint: string, metricsEndpoint = ''): Promise<{ code: string; message: string }> {
  const url = (p: string) => new URL(p, import.meta.url).href;
  const script = `
    const { CacheServer } = await import(${JSON.stringify(url('../../../src/server/cache-server.js'))});
    const { PromMetrics } = await import(${JSON.stringify(url('../../../src/server/metrics.js'))});
    const { nullLogger } = await import(${JSON.stringify(url('../../../src/platform/logger.js'))});
    const { systemClock } = await import(${JSON.stringify(url('../../../src/platform/clock.js'))});
    const [endpoint, metricsEndpoint] = JSON.parse(process.argv[1]);
    const pool = { start() {}, async close() {}, config: () => ({}) };
    const deps = { paths: { runDir: '/nonexistent', imageDir: '/img', cacheDir: '/c' }, clock: systemClock, logger: nullLogger };
    const opts = { endpoint, leaseTimeoutMs: 1000, agentDialTimeoutMs: 1000, metricsEndpoint };
    try {
      await new CacheServer(pool, opts, deps, new PromMetrics()).start();
      console.log(JSON.stringify({ code: 'STARTED', message: '' }));
    } catch (e) {
      console.log(JSON.stringify({ code: e.code ?? 'UNEXPECTED', message: e.message }));
    }`;
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', script, JSON.stringify([endpoint, metricsEndpoint])],
      { timeout: 15_000 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`child did not exit by itself (${err.message}): ${stdout}${stderr}`));
        else resolve(JSON.parse(stdout.trim().split('\n').pop()!));
      },
    );
  });
}

describe('cache server endpoints', () => {
  const KEY = '[factory] vm_cache_endpoint';

  it('refuses to replace a regular file at vm_cache_endpoint', async () => {
    const path = fresh('cache.sock');
    writeFileSync(path, 'precious');
    const r = await startInChild(path);
    assert.equal(r.code, 'VMC_ERR_CACHE_ENDPOINT_UNUSABLE', r.message);
    assert.ok(r.message.includes(KEY) && r.message.includes(path), r.message);
    assert.equal(readFileSync(path, 'utf8'), 'precious');
  });

  it('fails and exits on an endpoint too long for a Unix socket (no truncated bind, no hang)', async () => {
    const path = join(fresh('d'), 'c'.repeat(110));
    const r = await startInChild(path);
    assert.equal(r.code, 'VMC_ERR_CONFIG_INVALID', r.message);
    assert.match(r.message, /\[factory\] vm_cache_endpoint .* must be a path of at most 107 bytes/);
  });

  it('fails with a typed error and exits when the parent of the endpoint is a file', async () => {
    const file = fresh('file');
    writeFileSync(file, 'x');
    const r = await startInChild(join(file, 'cache.sock'));
    assert.equal(r.code, 'VMC_ERR_CACHE_ENDPOINT_UNUSABLE', r.message);
    assert.match(r.message, /\[factory\] vm_cache_endpoint .*: its parent .* is not a directory/);
  });

  it('undoes the cache socket and exits when the metrics endpoint is unusable, leaving its file alone', async () => {
    const cache = fresh('cache.sock');
    const metrics = fresh('metrics.sock');
    writeFileSync(metrics, 'precious');
    const r = await startInChild(cache, metrics);
    assert.equal(r.code, 'VMC_ERR_CACHE_ENDPOINT_UNUSABLE', r.message);
    assert.ok(r.message.includes('[cache] metrics_endpoint') && r.message.includes(metrics), r.message);
    assert.equal(readFileSync(metrics, 'utf8'), 'precious');
    assert.equal(existsSync(cache), false, 'the cache socket was removed');
  });

  it('creates both sockets with mode 0600 under umask 000 and removes them on stop', async () => {
    const cache = fresh('cache.sock');
    const metrics = fresh('metrics.sock');
    staleSocket(cache);
    const server = new CacheServer(pool, serverOpts(cache, metrics), deps, new PromMetrics());
    await withUmask(0, () => server.start());
    assert.equal(statSync(cache).mode & 0o777, 0o600);
    assert.equal(statSync(metrics).mode & 0o777, 0o600);
    await server.stop();
    assert.equal(existsSync(cache), false);
    assert.equal(existsSync(metrics), false);
  });

  it('refuses a second server on a live socket', async () => {
    const cache = fresh('cache.sock');
    const live: Server = createServer();
    await new Promise<void>((r) => live.listen(cache, r));
    try {
      const r = await startInChild(cache);
      assert.equal(r.code, 'VMC_ERR_CACHE_ENDPOINT_IN_USE', r.message);
      assert.match(r.message, /already serving/);
      assert.ok(lstatSync(cache).isSocket());
    } finally {
      live.close();
    }
  });
});
