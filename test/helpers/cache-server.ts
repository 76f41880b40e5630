import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { finished, run, VMCACHE } from './cli.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts `vmcache factory init` with `env` (whose VMCACHE_CONFIG names a configuration with a cache endpoint)
 * and waits until it listens on `endpoint`. `stop()` quits it, waits for it and stops whatever VM it left.
 */
export async function startCacheServer(
  env: NodeJS.ProcessEnv,
  endpoint: string,
): Promise<{ pid: number; stop(): Promise<void> }> {
  const server = spawn(VMCACHE, ['factory', 'init'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const done = finished(server);
  for (let i = 0; !existsSync(endpoint); i++) {
    if (i > 300 || server.exitCode !== null)
      assert.fail(`cache server never listened: ${(await done).stderr}`);
    await sleep(100);
  }
  return {
    pid: server.pid!,
    async stop() {
      await run(VMCACHE, ['factory', 'destroy'], env);
      if (server.exitCode === null) server.kill('SIGKILL');
      await done;
      await run(VMCACHE, ['vm', 'gc'], env);
    },
  };
}
