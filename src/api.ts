/**
 * vmcache's API for Node programs.
 *
 * ```ts
 * import { connectCache } from 'vmcache';
 * const cache = await connectCache('/run/vmcache/cache.sock');
 * const vm = await cache.getVM({ cpus: 1, memoryMiB: 512 }, { missPolicy: 'fail' });
 * const r = await vm.run(['uname', '-r']);
 * await vm.destroy();
 * await cache.close();
 * ```
 */
import type { MissPolicy } from './config/schema.js';
import type { FactoryBase } from './factory/base.js';
import { VmFactory } from './factory/factory.js';
import { FallbackCounter } from './factory/metrics.js';
import { RemoteCacheFactory } from './factory/remote-cache.js';
import { systemClock } from './platform/clock.js';
import { runCommand } from './platform/command.js';
import { type Logger, nullLogger } from './platform/logger.js';
import { defaultPaths } from './platform/paths.js';
import type { GrpcStatus } from './protocol/cache/generated/cache.js';
import type { Vm } from './vm/vm.js';

export { MISS_POLICIES, type MissPolicy } from './config/schema.js';
export { type ErrorCode, ErrorCodes, isVmcError, VmcError } from './errors.js';
export type { AgentProcess, ExitStatus } from './protocol/agent/client.js';
export type { ExecRequest } from './protocol/agent/messages.js';
export type { RunResult, Vm } from './vm/vm.js';

/** The size of VM wanted; the cache's VMs are grown by hot-plug when this is larger (never shrunk). */
export interface VmShape {
  cpus?: number;
  memoryMiB?: number;
}

/**
 * What a request gets when the cache has no VM ready: `wait` up to the server's `[cache] acquire_timeout`
 * (VMC_ERR_CACHE_TIMEOUT after), `fail` at once (VMC_ERR_CACHE_MISS), `cold`: the server boots one for it.
 * Absent, the connection's choice applies, and without one the server's `[cache] miss_policy`.
 */
export interface GetVmOptions {
  missPolicy?: MissPolicy;
}

/** A connection to a VM cache server. */
export interface CacheClient {
  /** A running VM of at least `shape`, taken from the cache, reseeded and clock-synced; the caller owns it. */
  getVM(shape?: VmShape, opts?: GetVmOptions): Promise<Vm>;
  /** The server's pool. */
  status(): Promise<GrpcStatus>;
  /** Closes the connection (VMs already obtained are not affected). */
  close(): Promise<void>;
}

/** Connects to the cache server at `endpoint` (a Unix socket path). */
export async function connectCache(
  endpoint = '/run/vmcache/cache.sock',
  opts: { logger?: Logger; missPolicy?: MissPolicy } = {},
): Promise<CacheClient> {
  const deps = {
    paths: defaultPaths({}, process.getuid?.() ?? 0),
    clock: systemClock,
    logger: opts.logger ?? nullLogger,
    run: runCommand,
  };
  const remote = await RemoteCacheFactory.connect(endpoint, deps, { missPolicy: opts.missPolicy });
  // Asks for the cache's own spec at another size, which never falls back; the sink is there all the same.
  const composer = { ...deps, metrics: new FallbackCounter() };
  const factory = new VmFactory(remote, composer);
  return {
    async getVM(shape = {}, { missPolicy } = {}) {
      const base = remote.config();
      // A policy for this call only: the same connection, seen through a base that asks for it.
      const f = missPolicy ? new VmFactory(withMissPolicy(remote, missPolicy), composer) : factory;
      const got = await f.getVM({
        ...base,
        cpus: shape.cpus ?? base.cpus,
        memoryMiB: shape.memoryMiB ?? base.memoryMiB,
      });
      return got.vm;
    },
    status: () => remote.serverStatus(),
    close: () => remote.close(),
  };
}

/** `remote` asking for `missPolicy` on every GetBaseVM; closing it leaves the connection open. */
function withMissPolicy(remote: RemoteCacheFactory, missPolicy: MissPolicy): FactoryBase {
  return {
    config: () => remote.config(),
    getBaseVM: (signal, opts) => remote.getBaseVM(signal, { ...opts, missPolicy }),
    close: async () => {},
  };
}
