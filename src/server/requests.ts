import type { ChannelOptions, Metadata, MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import { MISS_POLICIES, type MissPolicy } from '../config/schema.js';
import { messageOf, VmcError } from '../errors.js';
import {
  LEASE_METADATA,
  MISS_POLICY_METADATA,
  parseShape,
  SHAPE_METADATA,
  UNREADY_METADATA,
} from '../factory/cache-wire.js';
import type { AckVMRequest } from '../protocol/cache/generated/cache.js';

/**
 * The largest request the server reads, in bytes, after decompression (grpc-js checks the length prefix before
 * buffering, and stops inflating past it, so a compressed bomb is refused too). Four of the five RPCs take
 * `Empty` (0 bytes); the largest legitimate request is an AckVMRequest, about 40 bytes (a 12-character VM id
 * and a 24-character lease id). 4 KiB is a hundred times that, and keeps any request trivially cheap to hold.
 * grpc-js's default is 4 MiB: enough for a 3 MiB id.
 */
export const MAX_REQUEST_BYTES = 4096;

/**
 * A connection whose peer's HTTP/2 layer does not answer a ping within KEEPALIVE_TIMEOUT_MS is closed; pings
 * go out every KEEPALIVE_MS. A peer whose session broke (one that sent a header block of hundreds of KiB, for
 * one) keeps its socket open without answering anything, and the server would hold that session's buffers for
 * as long as the peer lives. Pings are answered by the peer's HTTP/2 stack, not its code, so a client that is
 * merely slow or waiting on GetBaseVM (up to `acquire_timeout`) is never cut.
 */
export const KEEPALIVE_MS = 60_000;
/** See {@link KEEPALIVE_MS}: generous for a local Unix socket, where a live peer answers in microseconds. */
export const KEEPALIVE_TIMEOUT_MS = 20_000;
/**
 * A connection with no call in flight for this long is closed (GOAWAY; a grpc-js client reconnects by itself on
 * its next call). Clients make a few calls and leave, so this only bounds what a connection nobody uses holds.
 */
export const MAX_CONNECTION_IDLE_MS = 5 * 60_000;

/** grpc-js options of the cache server. */
export const SERVER_OPTIONS: Readonly<ChannelOptions> = Object.freeze({
  'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
  'grpc.keepalive_time_ms': KEEPALIVE_MS,
  'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
  'grpc.max_connection_idle_ms': MAX_CONNECTION_IDLE_MS,
});

/**
 * Longest VM or lease id accepted. The server issues 12 (VM: `newVmId`, 6 random bytes in hex) and 24 (lease:
 * 12 random bytes in hex) lowercase hex characters. The check is on the shape every issued id has (lowercase
 * letters and digits, short) rather than on the exact length, so that a pool of test doubles (`fake0`) and
 * clients that probe with a made-up id still get the lease answer; the lease table is what decides.
 */
export const MAX_ID_CHARS = 32;
/** Linear: one anchored character class, no alternation or nested quantifier; only run on ≤ MAX_ID_CHARS. */
const ID_CHARS = /^[0-9a-z]+$/;

/** Marks a request that did not decode (see {@link tolerantService}). */
const MALFORMED: unique symbol = Symbol('malformed request');
interface Malformed {
  readonly [MALFORMED]: string;
}

function isMalformed(req: unknown): req is Malformed {
  return typeof req === 'object' && req !== null && MALFORMED in req;
}

/**
 * The service definition with deserializers that never throw. grpc-js answers a request whose protobuf does
 * not decode with INTERNAL ("Error deserializing request"), as if the server were broken; here it reaches the
 * handler marked as malformed, and the checks below refuse it with INVALID_ARGUMENT like any other bad request.
 */
export function tolerantService<S extends ServiceDefinition>(def: S): S {
  const out: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const [name, m] of Object.entries(def) as [string, MethodDefinition<unknown, unknown>][]) {
    out[name] = {
      ...m,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return m.requestDeserialize(bytes);
        } catch (err) {
          // The decoder's messages are short ("premature EOF", "invalid wire type 7"); bounded all the same.
          return { [MALFORMED]: `undecodable ${bytes.length}-byte request (${messageOf(err).slice(0, 80)})` };
        }
      },
    };
  }
  return out as S;
}

function invalid(what: string): VmcError {
  return new VmcError('VMC_ERR_CACHE_PROTOCOL', `invalid request: ${what}`);
}

/** At most 16 characters of a client's value, quoted, and its length: enough to recognise, never the whole. */
function received(v: string): string {
  const head = JSON.stringify(v.slice(0, 16));
  return v.length > 16 ? `${head}… (${v.length} characters)` : head;
}

/** Throws VMC_ERR_CACHE_PROTOCOL unless `v` is an id of the shape the server issues. Cost bounded by the cap. */
function checkId(field: string, v: unknown): string {
  if (typeof v !== 'string') throw invalid(`${field} must be a string`);
  if (v.length === 0) throw invalid(`${field} is empty`);
  if (v.length > MAX_ID_CHARS || !ID_CHARS.test(v))
    throw invalid(
      `${field} must be 1 to ${MAX_ID_CHARS} lowercase letters and digits, as the server issues; got ${received(v)}`,
    );
  return v;
}

/** Checks a request of an RPC that takes `Empty` (unknown fields are skipped, as protobuf allows). */
export function checkEmpty(method: string, req: unknown): void {
  if (isMalformed(req)) throw invalid(`${method}: ${req[MALFORMED]}`);
}

/** Checks an AckVMRequest; returns its two ids. */
export function checkAckVm(req: unknown): { id: string; leaseId: string } {
  if (isMalformed(req)) throw invalid(`AckVM: ${req[MALFORMED]}`);
  const r = req as Partial<AckVMRequest>;
  return { id: checkId('AckVM id', r.id), leaseId: checkId('AckVM leaseId', r.leaseId) };
}

/** Whether GetBaseVM asks for a lease: `vmcache-lease` absent, `0` or `1`, once; anything else is refused. */
export function checkLeaseMetadata(md: Metadata): boolean {
  const values = md.get(LEASE_METADATA);
  if (values.length === 0) return false;
  const v = values[0];
  if (values.length > 1 || (v !== '0' && v !== '1'))
    throw invalid(
      `metadata ${LEASE_METADATA} must be "1" (or "0"), once; got ${values.length > 1 ? `${values.length} values` : received(String(v))}`,
    );
  return v === '1';
}

/** The miss policy a GetBaseVM asks for in `vmcache-miss-policy`: null when absent (the server's default). */
export function checkMissPolicyMetadata(md: Metadata): MissPolicy | null {
  const values = md.get(MISS_POLICY_METADATA);
  if (values.length === 0) return null;
  const v = values[0];
  if (values.length > 1 || typeof v !== 'string' || !(MISS_POLICIES as readonly string[]).includes(v))
    throw invalid(
      `metadata ${MISS_POLICY_METADATA} must be one of ${MISS_POLICIES.join(', ')}, once; got ${values.length > 1 ? `${values.length} values` : received(String(v))}`,
    );
  return v as MissPolicy;
}

/** The shape a GetBaseVM asks for in `vmcache-shape` (see cache-wire.ts), or null (the default pool's). */
export function checkShapeMetadata(md: Metadata): { cpus: number; memoryMiB: number } | null {
  const values = md.get(SHAPE_METADATA);
  if (values.length === 0) return null;
  const v = values[0];
  const shape = values.length === 1 && typeof v === 'string' ? parseShape(v) : null;
  if (!shape)
    throw invalid(
      `metadata ${SHAPE_METADATA} must be <vCPUs>x<MiB> (e.g. 2x1024; vCPUs 1–1024, MiB 1–16777216), once; got ${values.length > 1 ? `${values.length} values` : received(String(v))}`,
    );
  return shape;
}

/** The VM id a GetBaseVM reports as discarded in `vmcache-unready` (see cache-wire.ts), or null. */
export function checkUnreadyMetadata(md: Metadata): string | null {
  const values = md.get(UNREADY_METADATA);
  if (values.length === 0) return null;
  if (values.length > 1)
    throw invalid(`metadata ${UNREADY_METADATA} must be one VM id; got ${values.length} values`);
  return checkId(`metadata ${UNREADY_METADATA}`, values[0]);
}
