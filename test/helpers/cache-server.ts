import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { RemoteCacheFactory } from '../../src/factory/remote-cache.js';
import type { GrpcStatus } from '../../src/protocol/cache/generated/cache.js';
import type { VmDeps } from '../../src/vm/vm.js';
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

/**
 * A `vmcache factory init` child that a test starts, kills (`kill -9`) and starts again, and the client it
 * talks to it through (`remote`, replaced on each start).
 */
export class FactoryInit {
  process!: ChildProcess;
  done!: ReturnType<typeof finished>;
  remote!: RemoteCacheFactory;

  constructor(
    readonly env: NodeJS.ProcessEnv,
    readonly endpoint: string,
    readonly deps: VmDeps,
  ) {}

  /** Starts the server and resolves with a client once it answers (it adopts before it listens). */
  async start(): Promise<RemoteCacheFactory> {
    this.process = spawn(VMCACHE, ['factory', 'init'], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.done = finished(this.process);
    for (let i = 0; i < 300; i++) {
      try {
        this.remote = await RemoteCacheFactory.connect(this.endpoint, this.deps);
        return this.remote;
      } catch {
        if (this.process.exitCode !== null) break;
        await sleep(100);
      }
    }
    this.process.kill('SIGKILL');
    return assert.fail(`the cache server never answered: ${(await this.done).stderr}`);
  }

  status(): Promise<GrpcStatus> {
    return this.remote.serverStatus();
  }

  /** The status once `pred` holds, polled every 200 ms; fails the test after `ms`. */
  async waitFor(what: string, pred: (s: GrpcStatus) => boolean, ms = 120_000): Promise<GrpcStatus> {
    const deadline = Date.now() + ms;
    for (;;) {
      const s = await this.status();
      if (pred(s)) return s;
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}: ${JSON.stringify(s)}`);
      await sleep(200);
    }
  }

  /** `kill -9` of the server (its client closed first), once it has exited. */
  async kill(): Promise<void> {
    await this.remote.close();
    this.process.kill('SIGKILL');
    await this.done;
  }

  /** For after(): closes the client and kills a server still running. */
  async cleanup(): Promise<void> {
    await this.remote?.close();
    if (this.process && this.process.exitCode === null) this.process.kill('SIGKILL');
  }
}
