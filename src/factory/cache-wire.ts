/**
 * The cache protocol's wire, both ends: metadata keys, the Config and VM messages (encode, and a validated
 * decode: a bad message from a peer is a VMC_ERR_CACHE_PROTOCOL naming the field), and errors ↔ gRPC status.
 * The server (server/cache-service.ts) and the client (factory/remote-cache.ts) both convert here only, so the
 * two ends cannot drift apart.
 * It lives in factory/, above vm/, because the VM message carries the hand-off blob (vm/handoff.ts).
 */
import { status as GrpcCode, Metadata, type ServiceError } from '@grpc/grpc-js';
import { z } from 'zod';
import { type ErrorCode, ErrorCodes, isVmcError, messageOf, VmcError } from '../errors.js';
import type { VmSpec } from '../hypervisor/types.js';
import { AGENT_PROTOCOL_VERSION } from '../protocol/agent/messages.js';
import type { GrpcVM, GrpcVMConfig } from '../protocol/cache/generated/cache.js';
import { decodeHandoff, encodeHandoff } from '../vm/handoff.js';
import type { VmRecord } from '../vm/record.js';

/** Metadata key by which a client asks for a lease (and promises to call AckVM). */
export const LEASE_METADATA = 'vmcache-lease';
/**
 * Metadata key by which a GetBaseVM chooses its miss policy (`wait`, `fail` or `cold`: config/schema.ts
 * MISS_POLICIES); absent, the server's `[cache] miss_policy` applies (Kata's clients send none).
 */
export const MISS_POLICY_METADATA = 'vmcache-miss-policy';
/**
 * Metadata key by which a GetBaseVM reports the VM this client got just before from this server and discarded
 * because its agent did not answer right after resume (the hand-out health gate, remote-cache.ts): the server
 * counts it. The id only: the server counts a VM it handed out, once.
 */
export const UNREADY_METADATA = 'vmcache-unready';
/**
 * Metadata key by which a GetBaseVM names the shape it wants, `<vCPUs>x<MiB>` (e.g. `2x1024`): a server of
 * several pools serves it from that shape's pool, or routes it (factory/pool-set.ts). Absent (Kata's clients):
 * the default pool's shape.
 */
export const SHAPE_METADATA = 'vmcache-shape';
/** The `vmcache-shape` value of a shape. */
export function formatShape(s: { cpus: number; memoryMiB: number }): string {
  return `${s.cpus}x${s.memoryMiB}`;
}
/** A `vmcache-shape` value, or null when it is not one (vCPUs 1–1024, MiB 1–16777216, decimal, no sign). */
export function parseShape(v: string): { cpus: number; memoryMiB: number } | null {
  const m = /^([1-9][0-9]{0,3})x([1-9][0-9]{0,7})$/.exec(v);
  if (!m) return null;
  const cpus = Number(m[1]);
  const memoryMiB = Number(m[2]);
  return cpus <= 1024 && memoryMiB <= 16_777_216 ? { cpus, memoryMiB } : null;
}
/** Metadata key of a failed call's trailers: the server's VmcError code, so the client raises the same one. */
export const ERROR_CODE_METADATA = 'vmcache-error-code';

// ---- Config ----

/** A peer's VmSpec. Strings may be empty (the composer compares them; it does not boot from them). */
const vmSpecSchema = z.object({
  qemuPath: z.string(),
  machine: z.string(),
  accel: z.enum(['kvm', 'tcg']),
  cpuModel: z.string(),
  cpus: z.int().positive(),
  maxCpus: z.int().positive(),
  memoryMiB: z.int().positive(),
  memorySlots: z.int().nonnegative(),
  maxMemoryMiB: z.int().positive(),
  kernel: z.string(),
  initrd: z.string(),
  rootDisk: z.string(),
  kernelParams: z.array(z.string()),
  tcgTbSizeMiB: z.int().nonnegative(),
}) satisfies z.ZodType<VmSpec>;

/** The Config reply: the pool's spec as JSON (Kata's `Data`) and how to reach the agent (`AgentConfig`). */
export function encodeConfig(spec: VmSpec, agent: { dialTimeoutMs: number }): GrpcVMConfig {
  return {
    Data: Buffer.from(JSON.stringify(spec)),
    AgentConfig: Buffer.from(
      JSON.stringify({
        protocol: 'vmcache-agent',
        version: AGENT_PROTOCOL_VERSION,
        dialTimeoutMs: agent.dialTimeoutMs,
      }),
    ),
  };
}

/** The server's VmSpec from a Config reply; throws VMC_ERR_CACHE_PROTOCOL naming the field at fault. */
export function decodeConfig(cfg: GrpcVMConfig): VmSpec {
  let data: unknown;
  try {
    data = JSON.parse(Buffer.from(cfg.Data).toString('utf8'));
  } catch (cause) {
    throw new VmcError('VMC_ERR_CACHE_PROTOCOL', `cache Config: Data is not JSON (${messageOf(cause)})`, {
      cause,
    });
  }
  const r = vmSpecSchema.safeParse(data);
  if (r.success) return r.data;
  // Zod's messages name the expected type, never the peer's value.
  const why = r.error.issues
    .slice(0, 3)
    .map((i) => `${['Data', ...i.path.map(String)].join('.')}: ${i.message}`)
    .join('; ');
  throw new VmcError('VMC_ERR_CACHE_PROTOCOL', `cache Config: invalid VM spec (${why})`, { cause: r.error });
}

// ---- VM ----

/** A lease on a handed-out VM; both zero/empty when the client asked for none (a Kata-original client). */
export interface Lease {
  leaseId: string;
  leaseExpiresUnixMs: number;
}

/** The GetBaseVM reply for `record` (Kata's fields 1–7, then the lease). */
export function encodeVm(record: VmRecord, lease: Lease): GrpcVM {
  return {
    id: record.id,
    hypervisor: encodeHandoff(record),
    proxyPid: 0,
    proxyURL: '',
    cpu: record.spec.cpus + record.hotplug.cpus,
    memory: record.spec.memoryMiB + record.hotplug.memoryMiB,
    cpuDelta: record.hotplug.cpus,
    ...lease,
  };
}

/** The record and lease of a GetBaseVM reply; throws VMC_ERR_CACHE_PROTOCOL naming the field at fault. */
export function decodeVm(g: GrpcVM): { record: VmRecord } & Lease {
  const record = decodeHandoff(g.hypervisor);
  if (record.id !== g.id)
    throw new VmcError(
      'VMC_ERR_CACHE_PROTOCOL',
      `cache GetBaseVM: id ${g.id} does not match its record (${record.id})`,
    );
  return { record, leaseId: g.leaseId, leaseExpiresUnixMs: g.leaseExpiresUnixMs };
}

// ---- Errors ----

/**
 * Longest status message sent, in characters. It travels in an HTTP/2 trailer (`grpc-message`, percent-encoded,
 * so up to 9 bytes a character): a trailer larger than the peer accepts (64 KiB by Node's default) is never
 * delivered, and the call and its whole connection hang. Messages never echo a client's value whole anyway.
 */
export const MAX_DETAILS_CHARS = 1024;
/** Linear (no nested quantifiers), and only ever run on a message already cut to MAX_DETAILS_CHARS. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** The status of each error code that has its own; every other error is INTERNAL. */
const STATUS_OF: Partial<Record<ErrorCode, GrpcCode>> = {
  VMC_ERR_CACHE_TIMEOUT: GrpcCode.DEADLINE_EXCEEDED,
  // Not UNAVAILABLE: a client without our metadata (Kata's) would take that for "no server" and boot directly.
  VMC_ERR_CACHE_MISS: GrpcCode.RESOURCE_EXHAUSTED,
  VMC_ERR_CACHE_CLOSED: GrpcCode.UNAVAILABLE,
  VMC_ERR_CACHE_LEASE: GrpcCode.FAILED_PRECONDITION,
  VMC_ERR_CACHE_PROTOCOL: GrpcCode.INVALID_ARGUMENT,
  // A shape above the hot-plug limits (factory/pool-set.ts): no VM of this cache can be it.
  VMC_ERR_CONFIG_INVALID: GrpcCode.OUT_OF_RANGE,
};

/**
 * The code a status without a (known) `vmcache-error-code` stands for: one raised by grpc-js itself (no server:
 * UNAVAILABLE; our own deadline: DEADLINE_EXCEEDED) or sent by a server that does not send the metadata (Kata's).
 * Anything else is an answer we cannot interpret.
 */
const CODE_OF: Partial<Record<GrpcCode, ErrorCode>> = {
  [GrpcCode.UNAVAILABLE]: 'VMC_ERR_CACHE_UNAVAILABLE',
  [GrpcCode.DEADLINE_EXCEEDED]: 'VMC_ERR_CACHE_TIMEOUT',
  [GrpcCode.FAILED_PRECONDITION]: 'VMC_ERR_CACHE_LEASE',
};

/** Server side: a thrown value as the gRPC error sent, with its VmcError code in `vmcache-error-code`. */
export function toGrpcError(err: unknown): { code: GrpcCode; details: string; metadata: Metadata } {
  const md = new Metadata();
  let code: GrpcCode = GrpcCode.INTERNAL;
  if (isVmcError(err)) {
    code = STATUS_OF[err.code] ?? GrpcCode.INTERNAL;
    md.set(ERROR_CODE_METADATA, err.code);
  }
  const m = messageOf(err);
  const cut = m.length > MAX_DETAILS_CHARS ? `${m.slice(0, MAX_DETAILS_CHARS)}… (truncated)` : m;
  // grpc-js percent-encodes the message with encodeURI, which throws on a lone surrogate (a cut pair, say).
  return { code, details: cut.replace(LONE_SURROGATE, '\uFFFD'), metadata: md };
}

/**
 * Client side: a failed call (`what`: the RPC) as a VmcError: the server's own code when its metadata carries
 * one we know, else the code its status stands for (see CODE_OF), else VMC_ERR_CACHE_PROTOCOL.
 */
export function fromGrpcError(e: ServiceError, what: string): VmcError {
  const sent = e.metadata?.get(ERROR_CODE_METADATA)[0];
  const known = typeof sent === 'string' && Object.hasOwn(ErrorCodes, sent) ? (sent as ErrorCode) : undefined;
  return new VmcError(
    known ?? CODE_OF[e.code] ?? 'VMC_ERR_CACHE_PROTOCOL',
    `cache ${what}: ${e.details || e.message}`,
    { cause: e, details: { grpcCode: e.code } },
  );
}
