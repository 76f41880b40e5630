import {
  status as GrpcCode,
  type handleUnaryCall,
  Metadata,
  type ServerUnaryCall,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { isVmcError, messageOf, type VmcError } from '../errors.js';
import type { CachingFactory } from '../factory/cache.js';
import { LEASE_METADATA } from '../factory/remote-cache.js';
import type { Logger } from '../platform/logger.js';
import { AGENT_PROTOCOL_VERSION } from '../protocol/agent/messages.js';
import type {
  AckVMRequest,
  CacheServiceServer,
  GrpcStatus,
  GrpcVM,
  GrpcVMConfig,
} from '../protocol/cache/generated/cache.js';
import type { Empty } from '../protocol/cache/generated/google/protobuf/empty.js';
import { encodeHandoff } from '../vm/handoff.js';
import { writeRecord } from '../vm/record.js';
import type { LeaseTable } from './leases.js';

/** The one place where vmcache errors become gRPC status codes. */
export function toGrpcError(err: unknown): { code: GrpcCode; details: string; metadata: Metadata } {
  const md = new Metadata();
  const code: GrpcCode = !isVmcError(err)
    ? GrpcCode.INTERNAL
    : ((
        {
          VMC_ERR_CACHE_TIMEOUT: GrpcCode.DEADLINE_EXCEEDED,
          VMC_ERR_CACHE_CLOSED: GrpcCode.UNAVAILABLE,
          VMC_ERR_CACHE_LEASE: GrpcCode.FAILED_PRECONDITION,
          VMC_ERR_CACHE_PROTOCOL: GrpcCode.INVALID_ARGUMENT,
        } as Partial<Record<VmcError['code'], GrpcCode>>
      )[err.code] ?? GrpcCode.INTERNAL);
  if (isVmcError(err)) md.set('vmcache-error-code', err.code);
  return { code, details: messageOf(err), metadata: md };
}

/** Options of the service. */
export interface CacheServiceOptions {
  leaseTimeoutMs: number;
  agentDialTimeoutMs: number;
  /** Called after Quit has been answered. */
  onQuit: () => void;
}

/**
 * The CacheService implementation (Kata's `cacheServer`). GetBaseVM closes the server's own QMP and agent
 * connections before answering: QEMU serves one QMP client at a time, and the agent must see the old owner
 * leave before the new one greets it.
 */
export function cacheService(
  pool: CachingFactory,
  leases: LeaseTable,
  log: Logger,
  opts: CacheServiceOptions,
): CacheServiceServer {
  const fail = (cb: sendUnaryData<unknown>, err: unknown) => cb(toGrpcError(err), null);
  // Kata computes the config reply once; so do we (the pool's config never changes).
  const configReply: GrpcVMConfig = {
    Data: Buffer.from(JSON.stringify(pool.config())),
    AgentConfig: Buffer.from(
      JSON.stringify({
        protocol: 'vmcache-agent',
        version: AGENT_PROTOCOL_VERSION,
        dialTimeoutMs: opts.agentDialTimeoutMs,
      }),
    ),
  };

  const getBaseVm: handleUnaryCall<Empty, GrpcVM> = (call: ServerUnaryCall<Empty, GrpcVM>, cb) => {
    const wantsLease = call.metadata.get(LEASE_METADATA)[0] === '1';
    pool.getBaseVM().then(
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
        cb(null, {
          id: r.id,
          hypervisor: encodeHandoff(r),
          proxyPid: 0,
          proxyURL: '',
          cpu: r.spec.cpus + r.hotplug.cpus,
          memory: r.spec.memoryMiB + r.hotplug.memoryMiB,
          cpuDelta: r.hotplug.cpus,
          leaseId,
          leaseExpiresUnixMs,
        });
      },
      (err: unknown) => fail(cb as sendUnaryData<unknown>, err),
    );
  };

  return {
    config: (_call, cb) => cb(null, configReply),
    getBaseVm,
    status: (_call, cb) => {
      const s = pool.status();
      const reply: GrpcStatus = {
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
        leased: leases.size,
        hits: s.hits,
        bootFailures: s.bootFailures,
        consecutiveFailures: s.consecutiveFailures,
        lastError: s.lastError ?? '',
        nextRetryUnixMs: s.nextRetryAt ?? 0,
      };
      cb(null, reply);
    },
    quit: (_call, cb) => {
      cb(null, {});
      // Answer first, then stop (Kata waits 1 s; answering before stopping is enough with grpc-js).
      setImmediate(opts.onQuit);
    },
    ackVm: (call: ServerUnaryCall<AckVMRequest, Empty>, cb) => {
      const { id, leaseId } = call.request;
      if (typeof id !== 'string' || !id || typeof leaseId !== 'string' || !leaseId) {
        return cb({ code: GrpcCode.INVALID_ARGUMENT, details: 'AckVM needs id and leaseId' }, null);
      }
      if (!leases.ack(id, leaseId)) {
        return cb(
          {
            code: GrpcCode.FAILED_PRECONDITION,
            details: `no open lease ${leaseId} for VM ${id} (expired or already acknowledged)`,
          },
          null,
        );
      }
      cb(null, {});
    },
  };
}
