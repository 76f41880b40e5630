/** A `vmcache factory init` process for one section of `npm run bench`, and the client that drives it. */
import { spawn } from 'node:child_process';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { RemoteCacheFactory } from '../src/factory/remote-cache.js';
import type { VmDeps } from '../src/vm/vm.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface BenchCache {
  /** The environment that points vmcache (CLI, runtime, containerd's shims) at this server. */
  env: NodeJS.ProcessEnv;
  remote: RemoteCacheFactory;
  pid: number;
  /** Resolves once `n` VMs (default: the pool's size) are idle in the pool: no refill boot competes. */
  waitFull(n?: number): Promise<void>;
  /** Quits the server and waits for it. */
  stop(): Promise<void>;
}

/**
 * Starts a cache server of `size` VMs whose configuration, socket and state live in `dir` (and `extraToml`
 * appended to its configuration), and connects to it. `logFile`: where the server's log goes (else nowhere).
 */
export async function startBenchCache(
  repo: string,
  deps: VmDeps,
  dir: string,
  size: number,
  extraToml = '',
  logFile?: string,
): Promise<BenchCache> {
  const cfg = `${dir}/cache.toml`;
  const socket = `${dir}/cache.sock`;
  writeFileSync(cfg, `[factory]\nvm_cache_number = ${size}\nvm_cache_endpoint = "${socket}"\n${extraToml}`);
  const env = { ...process.env, VMCACHE_CONFIG: cfg, VMCACHE_RUN_DIR: deps.paths.runDir };
  const log = logFile ? openSync(logFile, 'a') : 'ignore';
  const server = spawn(`${repo}bin/vmcache`, ['factory', 'init'], { env, stdio: ['ignore', log, log] });
  if (typeof log === 'number') closeSync(log);
  const exited = new Promise((r) => (server.exitCode !== null ? r(null) : server.on('exit', r)));
  let remote: RemoteCacheFactory | null = null;
  const listenBy = Date.now() + 120_000;
  while (!remote) {
    if (server.exitCode !== null) throw new Error(`the cache server exited with ${server.exitCode}`);
    if (Date.now() > listenBy) {
      server.kill('SIGKILL');
      throw new Error('the cache server did not listen within 120 s');
    }
    remote = await RemoteCacheFactory.connect(socket, deps).catch(async () => {
      await sleep(100);
      return null;
    });
  }
  const r = remote;
  return {
    env,
    remote: r,
    pid: server.pid!,
    async waitFull(n = size) {
      // A pool of 8 fills in ~90 s under TCG on 2 cores; 10 minutes means something is wrong.
      const by = Date.now() + 600_000;
      while ((await r.serverStatus()).vmstatus.length < n) {
        if (Date.now() > by) throw new Error(`the pool did not reach ${n} ready VMs within 600 s`);
        await sleep(250);
      }
    },
    async stop() {
      await r.quit().catch(() => undefined);
      await r.close();
      await Promise.race([exited, sleep(60_000)]);
      if (server.exitCode === null) server.kill('SIGKILL');
    },
  };
}
