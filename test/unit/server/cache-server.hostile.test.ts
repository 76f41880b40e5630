import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ChannelOptions, Client, status as Code, credentials, Metadata } from '@grpc/grpc-js';
import { LEASE_METADATA } from '../../../src/factory/cache-wire.js';
import { systemClock } from '../../../src/platform/clock.js';
import { runCommand } from '../../../src/platform/command.js';
import { nullLogger } from '../../../src/platform/logger.js';
import { AckVMRequest, GrpcStatus, GrpcVM } from '../../../src/protocol/cache/generated/cache.js';
import { CacheServer } from '../../../src/server/cache-server.js';
import { MAX_REQUEST_BYTES } from '../../../src/server/requests.js';
import { instantPool, instantVms } from '../../helpers/instant-vms.js';

/** Socket paths must stay under 107 bytes: a short directory under the system temp directory. */
const dir = mkdtempSync(join(tmpdir(), 'vmc-hr-'));
const MiB = 1 << 20;
const S = '/cache.CacheService/';

const fake = instantVms(dir);
const POOL = 2;

/** A CacheServer on `<dir>/<name>` in front of a pool of POOL instant fakes. */
function serve(name: string, grpcOptions: ChannelOptions = {}) {
  const pool = instantPool(fake, POOL);
  const endpoint = join(dir, name);
  const server = new CacheServer(
    pool,
    { endpoint, leaseTimeoutMs: 60_000, agentDialTimeoutMs: 1_000, metricsEndpoint: '', grpcOptions },
    {
      paths: { runDir: dir, imageDir: '/img', cacheDir: '/c' },
      clock: systemClock,
      logger: nullLogger,
      run: runCommand,
    },
    null,
  );
  return { pool, server, endpoint };
}
/** The server under test runs with the production options. */
const { pool, server, endpoint } = serve('cache.sock');

interface Answer {
  code: number;
  details: string;
  errorCode: string | undefined;
  value: Buffer | undefined;
  ms: number;
}

/** A raw client: any bytes to any method, on its own connection (no subchannel shared with another client). */
function rawClient(opts: ChannelOptions = {}, ep = endpoint): Client {
  return new Client(`unix://${ep}`, credentials.createInsecure(), {
    'grpc.use_local_subchannel_pool': 1,
    ...opts,
  });
}
const clients: Client[] = [];
const main = rawClient();
clients.push(main);

function unary(
  c: Client,
  method: string,
  body: Buffer | Uint8Array,
  md = new Metadata(),
  deadlineMs = 5_000,
): Promise<Answer> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    c.makeUnaryRequest(
      method.startsWith('/') ? method : S + method,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(body),
      md,
      { deadline: Date.now() + deadlineMs },
      (e, value) =>
        resolve({
          code: e?.code ?? Code.OK,
          details: e?.details ?? '',
          errorCode: e?.metadata?.get('vmcache-error-code')[0]?.toString(),
          value,
          ms: performance.now() - t0,
        }),
    );
  });
}
const ack = (c: Client, id: string, leaseId: string) =>
  unary(c, 'AckVM', AckVMRequest.encode({ id, leaseId }).finish());
const lease = () => {
  const md = new Metadata();
  md.set(LEASE_METADATA, '1');
  return md;
};

/** The promise this file keeps: after each batch, a good Status answers within 1 s, on the connection attacked. */
async function stillServing(c: Client = main): Promise<void> {
  const fresh = rawClient();
  for (const client of [c, fresh]) {
    const t0 = performance.now();
    const a = await new Promise<Answer>((resolve) =>
      client.makeUnaryRequest(
        `${S}Status`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.alloc(0),
        new Metadata(),
        { deadline: Date.now() + 1_000 },
        (e, value) =>
          resolve({ code: e?.code ?? 0, details: e?.details ?? '', errorCode: undefined, value, ms: 0 }),
      ),
    );
    assert.equal(a.code, Code.OK, `Status after the batch: ${a.details}`);
    assert.ok(performance.now() - t0 < 1_000);
    assert.equal(GrpcStatus.decode(a.value!).pid, process.pid);
  }
  fresh.close();
}

/** Refused with `code`, quickly, with a short message that does not carry the client's value back. */
function refused(a: Answer, code: Code, errorCode?: string, maxDetails = 300): void {
  assert.equal(a.code, code, `${Code[a.code]}: ${a.details}`);
  assert.ok(a.ms < 1_000, `answered in ${Math.round(a.ms)} ms`);
  assert.ok(a.details.length < maxDetails, `short details (${a.details.length} chars)`);
  if (errorCode) assert.equal(a.errorCode, errorCode);
}

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 100) assert.fail(`timed out waiting for ${what}`);
    await systemClock.sleep(20);
  }
}

before(async () => {
  await server.start();
  await pool.waitReady(POOL, 5_000);
});
after(async () => {
  for (const c of clients) c.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('cache server against hostile requests', () => {
  it('answers valid requests as before: Config, GetBaseVM with and without a lease, AckVM', async () => {
    const cfg = await unary(main, 'Config', Buffer.alloc(0));
    assert.equal(cfg.code, Code.OK);
    const g = GrpcVM.decode((await unary(main, 'GetBaseVM', Buffer.alloc(0), lease())).value!);
    assert.match(g.id, /^[0-9a-f]{12}$/);
    assert.match(g.leaseId, /^[0-9a-f]{24}$/);
    assert.equal(server.stats().leases, 1);
    assert.equal((await ack(main, g.id, g.leaseId)).code, Code.OK);
    assert.equal(server.stats().leases, 0);
    refused(await ack(main, g.id, g.leaseId), Code.FAILED_PRECONDITION, 'VMC_ERR_CACHE_LEASE');
    const kata = GrpcVM.decode((await unary(main, 'GetBaseVM', Buffer.alloc(0))).value!);
    assert.equal(kata.leaseId, '');
    assert.equal(server.stats().leases, 0);
    await pool.waitReady(POOL, 5_000);
    await stillServing();
  });

  it('refuses AckVM with an oversized, empty, ill-formed, undecodable or unknown id', async () => {
    const big = await ack(main, 'a'.repeat(3 * MiB), 'b'.repeat(24));
    refused(big, Code.RESOURCE_EXHAUSTED);
    assert.match(big.details, new RegExp(`${MAX_REQUEST_BYTES}`));
    // Under the message limit but over the id's: INVALID_ARGUMENT, naming the field, never echoing it whole.
    const long = await ack(main, 'a'.repeat(3_000), 'b'.repeat(24));
    refused(long, Code.INVALID_ARGUMENT, 'VMC_ERR_CACHE_PROTOCOL');
    assert.match(long.details, /AckVM id .*3000 characters/);
    for (const [id, leaseId] of [
      ['', ''],
      ['', 'b'.repeat(24)],
      ['0123456789ab', ''],
      ['../../etc/passwd', 'b'.repeat(24)],
      ['ABCDEF012345', 'b'.repeat(24)],
      ['0123456789ab', 'lease id'],
      ['0123\u00e9', 'b'.repeat(24)],
      ['0123456789ab', 'b'.repeat(33)],
    ] as const)
      refused(await ack(main, id, leaseId), Code.INVALID_ARGUMENT, 'VMC_ERR_CACHE_PROTOCOL');
    // Not protobuf: a length running past the end; a string that is not UTF-8; a wire type that does not exist.
    for (const bytes of [
      [0x0a, 0x7f, 0x41],
      [0x0a, 0x02, 0xff, 0xfe],
      [0x0f, 0x01],
    ])
      refused(
        await unary(main, 'AckVM', Buffer.from(bytes)),
        Code.INVALID_ARGUMENT,
        'VMC_ERR_CACHE_PROTOCOL',
      );
    // Well formed, but no such lease: the lease table's answer.
    refused(await ack(main, '0123456789ab', 'b'.repeat(24)), Code.FAILED_PRECONDITION, 'VMC_ERR_CACHE_LEASE');
    await stillServing();
  });

  it('refuses oversized and malformed Config, GetBaseVM, Status and Quit requests, without serving them', async () => {
    const idle = pool.status().idle.length;
    const { hits } = pool.status();
    for (const [m, n] of [
      ['Config', 3 * MiB],
      ['GetBaseVM', 64 * 1024],
      ['Status', MAX_REQUEST_BYTES + 1],
      ['Quit', 3 * MiB],
    ] as const)
      refused(await unary(main, m, Buffer.alloc(n, 0x0a)), Code.RESOURCE_EXHAUSTED);
    // A gzip bomb: 1 MiB of zeros compresses to about 1 KiB; inflating stops at the limit.
    const gz = rawClient({ 'grpc.default_compression_algorithm': 2 });
    clients.push(gz);
    await unary(gz, 'Status', Buffer.alloc(0)); // learn that the server accepts gzip
    refused(await unary(gz, 'Config', Buffer.alloc(MiB)), Code.RESOURCE_EXHAUSTED);
    for (const m of ['Config', 'GetBaseVM', 'Status', 'Quit'])
      refused(
        await unary(main, m, Buffer.from([0x0a, 0x7f])),
        Code.INVALID_ARGUMENT,
        'VMC_ERR_CACHE_PROTOCOL',
      );
    for (const v of ['yes', '2', 'x'.repeat(30_000)]) {
      const md = new Metadata();
      md.set(LEASE_METADATA, v);
      refused(
        await unary(main, 'GetBaseVM', Buffer.alloc(0), md),
        Code.INVALID_ARGUMENT,
        'VMC_ERR_CACHE_PROTOCOL',
      );
    }
    assert.equal(pool.status().idle.length, idle, 'no VM was handed out');
    assert.equal(pool.status().hits, hits);
    assert.equal(server.stats().leases, 0);
    await stillServing(); // and the refused Quits did not stop it
    await stillServing(gz);
  });

  it('answers an unknown method or service with UNIMPLEMENTED', async () => {
    refused(await unary(main, 'Nope', Buffer.alloc(0)), Code.UNIMPLEMENTED);
    refused(await unary(main, '/other.Service/Status', Buffer.alloc(0)), Code.UNIMPLEMENTED);
    // grpc-js's own message names the path; Node's header limit (64 KiB) bounds it.
    refused(
      await unary(main, `${S}${'x'.repeat(10_000)}`, Buffer.alloc(0)),
      Code.UNIMPLEMENTED,
      undefined,
      11_000,
    );
    await stillServing();
  });

  it('drops garbage and truncated bytes on the socket, and refuses truncated gRPC messages', async () => {
    const base = server.stats().connections;
    const junk = [
      Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\xff garbage'),
      Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00'), // preface, then half a frame header
      Buffer.from([0xff, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0xde, 0xad]),
      Buffer.alloc(0), // connects, says nothing, leaves
    ];
    await Promise.all(
      junk.map(
        (bytes) =>
          new Promise<void>((resolve) => {
            const s = connect(endpoint, () => (bytes.length ? s.end(bytes) : s.end()));
            s.on('error', () => {});
            s.on('close', () => resolve());
            s.resume();
            setTimeout(() => s.destroy(), 1_000).unref();
          }),
      ),
    );
    // HTTP/2 spoken correctly, gRPC framing not: a message shorter than its length prefix, and a prefix that
    // claims 3 MiB (refused at once, not after waiting for the bytes).
    const h2 = h2connect('http://localhost', { createConnection: () => connect(endpoint) });
    h2.on('error', () => {});
    const framed = (claimed: number, body: Buffer, end: boolean) =>
      new Promise<{ code: number; ms: number }>((resolve) => {
        const t0 = performance.now();
        const s = h2.request({
          ':method': 'POST',
          ':path': `${S}AckVM`,
          'content-type': 'application/grpc',
          te: 'trailers',
        });
        let code = -1;
        const grab = (h: Record<string, unknown>) => {
          if (h['grpc-status'] === undefined) return;
          code = Number(h['grpc-status']);
          resolve({ code, ms: performance.now() - t0 }); // the status is the answer; the stream may stay open
        };
        s.on('response', grab)
          .on('trailers', grab)
          .on('error', () => {});
        s.on('close', () => resolve({ code, ms: performance.now() - t0 }));
        s.resume();
        const prefix = Buffer.alloc(5);
        prefix.writeUInt32BE(claimed, 1);
        s.write(Buffer.concat([prefix, body]));
        if (end) s.end();
        setTimeout(() => s.close(), 2_000).unref();
      });
    const short = await framed(100, Buffer.from('0123456789'), true);
    assert.notEqual(short.code, Code.OK, 'a truncated message is refused');
    assert.equal(short.code, Code.UNIMPLEMENTED, "grpc-js's answer to a unary call without a whole message");
    const claimed = await framed(3 * MiB, Buffer.alloc(16), false);
    assert.equal(claimed.code, Code.RESOURCE_EXHAUSTED);
    assert.ok(claimed.ms < 1_000, `refused in ${Math.round(claimed.ms)} ms`);
    h2.destroy();
    await stillServing();
    await waitFor(() => server.stats().connections <= base + 2, 'the dropped connections to close');
  });

  it('holds nothing more after 200 malformed calls (leases, connections, VMs)', async () => {
    const before = server.stats();
    const idle = pool.status().idle.length;
    const badLease = new Metadata();
    badLease.set(LEASE_METADATA, 'please');
    const cases: ((c: Client) => Promise<Answer>)[] = [
      (c) => ack(c, 'a'.repeat(MiB), 'b'),
      (c) => ack(c, '', ''),
      (c) => ack(c, '0123456789ab', '0123456789ab0123456789ab'),
      (c) => ack(c, 'z'.repeat(40), 'y'.repeat(40)),
      (c) => unary(c, 'AckVM', Buffer.from([0x0a, 0x7f])),
      (c) => unary(c, 'Config', Buffer.alloc(64 * 1024)),
      (c) => unary(c, 'GetBaseVM', Buffer.alloc(0), badLease),
      (c) => unary(c, 'Quit', Buffer.from([0xff])),
      (c) => unary(c, 'Nope', Buffer.alloc(0)),
      (c) => unary(c, 'Status', Buffer.alloc(MAX_REQUEST_BYTES + 1)),
    ];
    const codes = new Map<number, number>();
    for (let i = 0; i < 200; i++) {
      // Every tenth call on a connection of its own, closed at once: connections must not pile up either.
      const c = i % 10 === 0 ? rawClient() : main;
      const a = await cases[i % cases.length]!(c);
      if (c !== main) c.close();
      assert.notEqual(a.code, Code.OK, `case ${i % cases.length} refused`);
      codes.set(a.code, (codes.get(a.code) ?? 0) + 1);
    }
    assert.deepEqual(
      new Set(codes.keys()),
      new Set([Code.RESOURCE_EXHAUSTED, Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.UNIMPLEMENTED]),
    );
    await stillServing();
    assert.equal(server.stats().leases, before.leases);
    await waitFor(
      () => server.stats().connections <= before.connections + 2,
      'per-call connections to close',
    );
    assert.equal(pool.status().idle.length, idle);
  });

  it('closes a connection whose peer stopped answering (a header block of 500 KiB broke its session)', async () => {
    // The production keepalive (60 s ping, 20 s timeout) shortened so that the test takes a second.
    const k = serve('keepalive.sock', { 'grpc.keepalive_time_ms': 200, 'grpc.keepalive_timeout_ms': 200 });
    await k.server.start();
    try {
      const c = rawClient({}, k.endpoint);
      clients.push(c);
      assert.equal((await unary(c, 'Status', Buffer.alloc(0))).code, Code.OK);
      const md = new Metadata();
      md.set('x-junk', 'j'.repeat(500 * 1024));
      const wedged = await unary(c, 'Status', Buffer.alloc(0), md, 500);
      assert.notEqual(wedged.code, Code.OK);
      // The client keeps its socket open; the server must not keep the session (and its buffers) for that long.
      await waitFor(() => k.server.stats().connections === 0, 'the server to close the dead connection');
      const fresh = rawClient({}, k.endpoint);
      assert.equal((await unary(fresh, 'Status', Buffer.alloc(0), new Metadata(), 1_000)).code, Code.OK);
      fresh.close();
    } finally {
      await k.server.stop();
    }
  });
});
