import type { handleUnaryCall, ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import type { MissPolicy } from '../config/schema.js';
import { VmcError } from '../errors.js';
import { encodeConfig, encodeVm, toGrpcError } from '../factory/cache-wire.js';
import type { PoolSet, PoolSetStatus } from '../factory/pool-set.js';
import type { Logger } from '../platform/logger.js';
import type {
  AckVMRequest,
  CacheServiceServer,
  GrpcStatus,
  GrpcVM,
  GrpcVMConfig,
} from '../protocol/cache/generated/cache.js';
import type { Empty } from '../protocol/cache/generated/google/protobuf/empty.js';
import { writeRecord } from '../vm/record.js';
import type { LeaseTable } from './leases.js';
import {
  checkAckVm,
  checkEmpty,
  checkLeaseMetadata,
  checkMissPolicyMetadata,
  checkShapeMetadata,
  checkUnreadyMetadata,
} from './requests.js';

/**
 * How long Status waits for each idle VM's QEMU to tell its run state (in parallel): a live QEMU answers in
 * milliseconds; a hung one is reported `unknown` rather than holding the answer (tests keep Status under 1 s).
 */
const STATE_QUERY_MS = 500;

/** The Status reply (Kata's pid and vmstatus, then vmcache's counters, summed and per pool). */
function statusReply(s: PoolSetStatus, leased: number): GrpcStatus {
  return {
    pid: process.pid,
    vmstatus: s.idle.map((v) => ({
      pid: v.pid,
      cpu: v.cpus,
      memory: v.memoryMiB,
      id: v.id,
      ageMs: v.ageMs,
      state: v.state,
    })),
    target: s.target,
    booting: s.booting,
    leased,
    hits: s.hits,
    bootFailures: s.bootFailures,
    consecutiveFailures: s.consecutiveFailures,
    lastError: s.lastError ?? '',
    nextRetryUnixMs: s.nextRetryAt ?? 0,
    missesWait: s.missesByPolicy.wait,
    missesFail: s.missesByPolicy.fail,
    missesCold: s.missesByPolicy.cold,
    coldBooting: s.coldBooting,
    handoutDiscardsQemu: s.handoutDiscards.qemu,
    handoutDiscardsAgent: s.handoutDiscards.agent,
    memoryBudgetMiB: s.memoryBudgetMiB,
    pools: s.pools.map((p) => ({
      name: p.name,
      cpu: p.cpus,
      memory: p.memoryMiB,
      base: p.kind,
      ready: p.status.idle.length,
      booting: p.status.booting,
      target: p.target,
      min: p.min,
      max: p.max,
      targetReason: p.targetReason,
      ratePerSecond: p.ratePerSecond ?? 0,
      refillMs: p.refillMs ?? 0,
      hits: p.status.hits,
      missesWait: p.status.missesByPolicy.wait,
      missesFail: p.status.missesByPolicy.fail,
      missesCold: p.status.missesByPolicy.cold,
      evictedDead: p.status.evicted.dead,
      evictedAge: p.status.evicted.age,
      evictedShrink: p.status.evicted.shrink,
      bootMs: p.status.bootMs ?? 0,
      acquireMs: p.status.acquireMs ?? 0,
      bootFailures: p.status.bootFailures,
    })),
  };
}

/** Options of the service. */
export interface CacheServiceOptions {
  leaseTimeoutMs: number;
  agentDialTimeoutMs: number;
  /** What a GetBaseVM that does not choose gets on a miss (`[cache] miss_policy`). */
  missPolicy: MissPolicy;
  /** Called after Quit has been answered. */
  onQuit: () => void;
}

/**
 * The CacheService implementation (Kata's `cacheServer`). GetBaseVM closes the server's own QMP and agent
 * connections before answering: QEMU serves one QMP client at a time, and the agent must see the old owner
 * leave before the new one greets it. Every request is checked before any work (see requests.ts): a bad one
 * gets INVALID_ARGUMENT, and no value a client sent is logged, stored or echoed beyond a short prefix.
 */
export function cacheService(
  pool: PoolSet,
  leases: LeaseTable,
  log: Logger,
  opts: CacheServiceOptions,
): CacheServiceServer {
  const fail = (cb: sendUnaryData<unknown>, err: unknown) => cb(toGrpcError(err), null);
  // Kata computes the config reply once; so do we (the pool's config never changes).
  const configReply: GrpcVMConfig = encodeConfig(pool.config(), { dialTimeoutMs: opts.agentDialTimeoutMs });

  /** Runs `check` on the call first; whatever it throws is the answer, and the handler never runs. */
  const checked =
    <Req, Res>(check: (call: ServerUnaryCall<Req, Res>) => void, handler: handleUnaryCall<Req, Res>) =>
    (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => {
      try {
        check(call);
      } catch (err) {
        return fail(cb as sendUnaryData<unknown>, err);
      }
      handler(call, cb);
    };
  const empty = (method: string) => (call: { request: unknown }) => checkEmpty(method, call.request);

  const getBaseVm: handleUnaryCall<Empty, GrpcVM> = (call: ServerUnaryCall<Empty, GrpcVM>, cb) => {
    let wantsLease: boolean;
    let missPolicy: MissPolicy;
    let unready: string | null;
    let shape: { cpus: number; memoryMiB: number } | null;
    try {
      checkEmpty('GetBaseVM', call.request);
      wantsLease = checkLeaseMetadata(call.metadata);
      missPolicy = checkMissPolicyMetadata(call.metadata) ?? opts.missPolicy;
      unready = checkUnreadyMetadata(call.metadata);
      shape = checkShapeMetadata(call.metadata);
    } catch (err) {
      return fail(cb as sendUnaryData<unknown>, err);
    }
    if (unready !== null) pool.reportUnready(unready);
    pool.getBaseVM(undefined, { missPolicy, shape: shape ?? undefined }).then(
      (vm) => {
        if (call.cancelled) {
          // The client gave up while waiting: it never saw this VM, so nobody else can have it.
          log.info({ vmId: vm.id }, 'GetBaseVM cancelled by the client; stopping the VM it would have got');
          void vm.destroy();
          return;
        }
        vm.detach();
        const r = vm.record;
        let leaseId = '';
        let leaseExpiresUnixMs = 0;
        if (wantsLease) {
          ({ leaseId, expiresAt: leaseExpiresUnixMs } = leases.open(r, opts.leaseTimeoutMs));
        } else {
          // A Kata-original client never acknowledges: the VM is theirs as soon as it is sent, and recorded
          // as unowned so that the orphan sweep leaves it alone.
          r.owner = null;
          writeRecord(r);
        }
        log.info({ vmId: r.id, lease: wantsLease }, 'VM handed out');
        cb(null, encodeVm(r, { leaseId, leaseExpiresUnixMs }));
      },
      (err: unknown) => fail(cb as sendUnaryData<unknown>, err),
    );
  };

  return {
    config: checked(empty('Config'), (_call, cb) => cb(null, configReply)),
    getBaseVm,
    // The idle VMs' states are read from QEMU on each call (bounded), not assumed.
    status: checked(empty('Status'), (_call, cb) => {
      pool.queryStatus(STATE_QUERY_MS).then(
        (s) => cb(null, statusReply(s, leases.size)),
        (err: unknown) => fail(cb as sendUnaryData<unknown>, err),
      );
    }),
    quit: checked(empty('Quit'), (_call, cb) => {
      cb(null, {});
      // Answer first, then stop (Kata waits 1 s; answering before stopping is enough with grpc-js).
      setImmediate(opts.onQuit);
    }),
    ackVm: (call: ServerUnaryCall<AckVMRequest, Empty>, cb) => {
      let id: string;
      let leaseId: string;
      try {
        ({ id, leaseId } = checkAckVm(call.request));
      } catch (err) {
        return fail(cb as sendUnaryData<unknown>, err);
      }
      // Both ids are short and checked: the lookup and the message below cost nothing.
      if (!leases.ack(id, leaseId))
        return fail(
          cb as sendUnaryData<unknown>,
          new VmcError(
            'VMC_ERR_CACHE_LEASE',
            `no open lease ${leaseId} for VM ${id} (expired or already acknowledged)`,
          ),
        );
      cb(null, {});
    },
  };
}
