/**
 * The inputs of the cache server's fuzz target: gRPC calls to any method (the service's and made-up ones)
 * with random, malformed, truncated, near-limit and oversized bodies and random metadata; HTTP/2 streams with
 * hand-made gRPC framing; raw junk for the socket.
 */
import fc from 'fast-check';
import { LEASE_METADATA } from '../src/factory/remote-cache.js';
import { AckVMRequest } from '../src/protocol/cache/generated/cache.js';
import { MAX_REQUEST_BYTES } from '../src/server/requests.js';
import { hostileString, PROTOTYPE_NAMES } from './fuzz-common.js';

/** The service's path prefix. */
export const S = '/cache.CacheService/';
const METHODS = ['Config', 'GetBaseVM', 'Status', 'Quit', 'AckVM'];

/** Printable ASCII: what a header value may hold (grpc-js refuses anything else before sending). */
const ascii = (maxLength: number) =>
  fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength });

const method = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...METHODS).map((m) => S + m) },
  {
    weight: 2,
    arbitrary: fc.oneof(
      fc.stringMatching(/^[A-Za-z0-9_.-]{0,24}$/).map((m) => S + m),
      fc.constantFrom(...PROTOTYPE_NAMES).map((m) => S + m),
      fc.constantFrom(1_000, 9_000).map((n) => S + 'x'.repeat(n)),
      fc.constantFrom(
        '/other.Service/Status',
        '/',
        '//',
        '/cache.CacheService',
        `${S}status`,
        `${S}Status/x`,
      ),
    ),
  },
);

/** A protobuf field of any number and wire type, with a payload that may not fit it. */
const field = fc
  .tuple(
    fc.oneof(fc.integer({ min: 1, max: 20 }), fc.constantFrom(0, 536_870_911)),
    fc.integer({ min: 0, max: 7 }),
    fc.uint8Array({ maxLength: 12 }),
  )
  .map(([n, wire, payload]) => {
    const key: number[] = [];
    for (let v = n * 8 + wire; ; v = Math.floor(v / 128)) {
      key.push(v >= 128 ? (v % 128) | 128 : v);
      if (v < 128) break;
    }
    return Buffer.concat([Buffer.from(key), Buffer.from(payload)]);
  });

const someIdString = fc.oneof(
  fc.constantFrom('0123456789ab', 'fake0', 'b'.repeat(24), '', 'ABC'),
  hostileString.filter((s) => s.length <= 5_000),
);

const body: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 3, arbitrary: fc.constant(new Uint8Array(0)) },
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 64 }) },
  { weight: 2, arbitrary: fc.array(field, { minLength: 1, maxLength: 4 }).map((fs) => Buffer.concat(fs)) },
  {
    weight: 3,
    arbitrary: fc
      .record({ id: someIdString, leaseId: someIdString })
      .map((r) => AckVMRequest.encode(r).finish()),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(
        fc.record({ id: someIdString, leaseId: someIdString }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.nat(255),
      )
      .map(([r, cut, flip]) => {
        const b = Buffer.from(AckVMRequest.encode(r).finish());
        const out = b.subarray(0, Math.floor(b.length * cut));
        if (out.length && flip % 2) out[flip % out.length] = out[flip % out.length]! ^ flip;
        return out;
      }),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(
        fc.constantFrom(MAX_REQUEST_BYTES - 1, MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 1, 65_536, 3 * 2 ** 20),
        fc.nat(255),
      )
      .map(([n, b]) => new Uint8Array(n).fill(b)),
  },
);

/** Metadata: the lease header with any value (once or twice), other headers, binary ones. */
const metadata = fc.array(
  fc.oneof(
    fc.tuple(
      fc.constant(LEASE_METADATA),
      fc.oneof(fc.constantFrom('1', '0', 'yes', '', ' 1', '01', 'x'.repeat(20_000)), ascii(40)),
    ),
    fc.tuple(fc.constantFrom('x-junk', 'vmcache-error-code', 'user-agent-x'), ascii(2_000)),
    fc.tuple(fc.constantFrom(`${LEASE_METADATA}-bin`, 'x-b-bin'), fc.uint8Array({ maxLength: 32 })),
  ),
  { maxLength: 3 },
);

/** A case: a gRPC call, an HTTP/2 stream with hand-made gRPC framing, or junk on a raw connection. */
export type CacheCase =
  | {
      kind: 'call';
      method: string;
      body: Uint8Array;
      md: Array<[string, string | Uint8Array]>;
      fresh: boolean;
    }
  | {
      kind: 'h2';
      method: string;
      flag: number;
      claimed: 'exact' | 'more' | 'less' | 'huge';
      body: Uint8Array;
      end: boolean;
      headers: Array<[string, string]>;
    }
  | { kind: 'junk'; bytes: Uint8Array };

export const cacheCase: fc.Arbitrary<CacheCase> = fc.oneof(
  {
    weight: 14,
    // Every tenth call or so on a connection of its own, closed at once: connections must not pile up.
    arbitrary: fc.record({
      kind: fc.constant('call' as const),
      method,
      body,
      md: metadata,
      fresh: fc.nat(9).map((n) => n === 0),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('h2' as const),
      method,
      flag: fc.constantFrom(0, 0, 0, 1, 7, 255),
      claimed: fc.constantFrom<'exact' | 'more' | 'less' | 'huge'>('exact', 'exact', 'more', 'less', 'huge'),
      body: fc.uint8Array({ maxLength: 64 }),
      end: fc.constantFrom(true, true, true, true, true, false),
      headers: fc.array(
        fc.oneof(
          fc.tuple(fc.constant('grpc-encoding'), fc.constantFrom('gzip', 'identity', 'deflate', 'zstd', '')),
          fc.tuple(fc.constant('grpc-timeout'), fc.constantFrom('1S', '0n', 'xyz', '99999999H')),
          fc.tuple(fc.constant('content-type'), fc.constantFrom('application/grpc+proto', 'text/plain', '')),
        ),
        { maxLength: 2 },
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc
      .oneof(
        fc.uint8Array({ maxLength: 128 }),
        fc
          .constantFrom(
            'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
            'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
            'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\u0000\u0000\u0012\u0004',
          )
          .map((s) => Buffer.from(s, 'latin1')),
        fc
          .uint8Array({ maxLength: 64 })
          .map((b) => Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), b])),
      )
      .map((bytes): CacheCase => ({ kind: 'junk', bytes })),
  },
);
