/**
 * Fuzz target 5: requests → a real `CacheServer` in front of a pool of instant fake VMs (as
 * test/unit/server/hostile-requests.test.ts builds one), on a Unix socket in a temp directory. Cases: gRPC calls
 * with a raw grpc-js client (any method, known or not; random, malformed, truncated, near-limit and oversized
 * bodies; random metadata), HTTP/2 streams with broken gRPC framing, and raw junk on the socket. Every complete
 * call gets a status that is not INTERNAL/UNKNOWN (the server's "unexpected") within its deadline; only an
 * answered GetBaseVM hands out a VM; after each batch a good Status answers within 1 s; at the end no lease
 * or connection is left.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, status as Code, credentials, Metadata } from '@grpc/grpc-js';
import { systemClock } from '../src/platform/clock.js';
import { runCommand } from '../src/platform/command.js';
import { nullLogger } from '../src/platform/logger.js';
import {
  AckVMRequest,
  CacheServiceService,
  GrpcStatus,
  GrpcVM,
} from '../src/protocol/cache/generated/cache.js';
import { CacheServer } from '../src/server/cache-server.js';
import { MAX_REQUEST_BYTES } from '../src/server/requests.js';
import { instantPool, instantVms } from '../test/helpers/instant-vms.js';
import { type CacheCase, cacheCase, S } from './fuzz-cache-inputs.js';
import { CaseFailure, type FuzzOptions, PROBE_MS, settle, type Target } from './fuzz-common.js';

const CALL_MS = 2_000;
const POOL = 2;
/**
 * The server's keepalive here (production: 60 s ping, 20 s timeout). Node's http2 stops reading a connection
 * once it has sent GOAWAY for a frame header over the frame size limit: it never sees that peer leave, and only
 * the keepalive's ping closes the connection. At 1 s the end check sees those go too (they are counted).
 */
const KEEPALIVE_MS = 1_000;

/** What became of the fake VMs: handed to a client (detached) or stopped. */
interface VmCounts {
  handed: number;
  stopped: number;
}

/**
 * Instant fake VMs: just what the server and the pool touch (bench/cache.ts and the hostile-requests test),
 * counting those handed out (the server detaches a VM just before it answers GetBaseVM) and stopped.
 */

interface Answer {
  code: number;
  details: string;
  value: Buffer | undefined;
}

function unary(
  c: Client,
  path: string,
  bytes: Uint8Array,
  md = new Metadata(),
  ms = CALL_MS,
): Promise<Answer> {
  return new Promise((resolve) =>
    c.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from(bytes),
      md,
      { deadline: Date.now() + ms },
      (e, value) => resolve({ code: e?.code ?? Code.OK, details: e?.details ?? '', value }),
    ),
  );
}

/** Whether the server would serve a Quit with this body (the tolerant decoder takes it): that stops it. */
function quitWouldStop(bytes: Uint8Array): boolean {
  if (bytes.length > MAX_REQUEST_BYTES) return false;
  try {
    CacheServiceService.quit.requestDeserialize(Buffer.from(bytes));
    return true;
  } catch {
    return false;
  }
}

/** Target 5: one CacheServer, its pool of POOL fakes, one long-lived raw client (and fresh ones now and then). */
export async function cacheTarget(_opts: FuzzOptions): Promise<Target<CacheCase>> {
  const dir = mkdtempSync(join(tmpdir(), 'vmc-fz-cache-'));
  const endpoint = join(dir, 'cache.sock');
  const deps = {
    paths: { runDir: dir, imageDir: '/img', cacheDir: join(dir, 'c') },
    clock: systemClock,
    logger: nullLogger,
    run: runCommand,
  };
  const vms: VmCounts = { handed: 0, stopped: 0 };
  const pool = instantPool(instantVms(dir, vms), POOL);
  // Production options but the keepalive (see KEEPALIVE_MS).
  const grpcOptions = { 'grpc.keepalive_time_ms': KEEPALIVE_MS, 'grpc.keepalive_timeout_ms': KEEPALIVE_MS };
  const server = new CacheServer(
    pool,
    { endpoint, leaseTimeoutMs: 60_000, agentDialTimeoutMs: 1_000, metricsEndpoint: '', grpcOptions },
    deps,
    null,
  );
  await server.start();
  await pool.waitReady(POOL, 5_000);
  const newClient = () =>
    new Client(`unix://${endpoint}`, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  const main = newClient();
  await unary(main, `${S}Status`, new Uint8Array(0)); // connected: the baseline counts this connection
  const before = server.stats();
  const taken = () => pool.status().hits + pool.status().misses;
  const takenBefore = taken();

  async function call(c: Extract<CacheCase, { kind: 'call' }>): Promise<'accepted' | 'refused'> {
    const path = c.method === `${S}Quit` && quitWouldStop(c.body) ? `${S}Status` : c.method;
    const md = new Metadata();
    for (const [k, v] of c.md) md.add(k, typeof v === 'string' ? v : Buffer.from(v));
    const client = c.fresh ? newClient() : main;
    try {
      const t0 = performance.now();
      const handed = vms.handed;
      const a = await unary(client, path, c.body, md);
      const ms = performance.now() - t0;
      if (a.code !== Code.OK && vms.handed !== handed)
        throw new CaseFailure(
          'violation',
          `a refused ${path.slice(0, 60)} (${Code[a.code]}) handed out a VM`,
        );
      if (a.code === Code.INTERNAL || a.code === Code.UNKNOWN)
        throw new CaseFailure(
          'crash',
          `${path.slice(0, 60)} answered ${Code[a.code]}: ${a.details.slice(0, 200)}`,
        );
      if (a.code === Code.DEADLINE_EXCEEDED || ms > PROBE_MS)
        throw new CaseFailure(
          'violation',
          `${path.slice(0, 60)} answered after ${Math.round(ms)} ms (${Code[a.code]})`,
        );
      if (a.details.length > 1_100 + path.length)
        throw new CaseFailure('violation', `details of ${a.details.length} chars`);
      if (a.code !== Code.OK) return 'refused';
      if (path === `${S}GetBaseVM`) {
        const vm = GrpcVM.decode(a.value!);
        if (vm.leaseId) {
          const ack = await unary(
            main,
            `${S}AckVM`,
            AckVMRequest.encode({ id: vm.id, leaseId: vm.leaseId }).finish(),
          );
          if (ack.code !== Code.OK)
            throw new CaseFailure('violation', `the lease just given cannot be acknowledged: ${ack.details}`);
        }
      }
      return 'accepted';
    } finally {
      if (c.fresh) client.close();
    }
  }

  async function stream(c: Extract<CacheCase, { kind: 'h2' }>): Promise<'accepted' | 'refused'> {
    const h2 = h2connect('http://localhost', { createConnection: () => connect(endpoint) });
    h2.on('error', () => {});
    try {
      const path = c.method === `${S}Quit` ? `${S}Status` : c.method; // a whole Quit would stop the server
      const headers: Record<string, string> = {
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
      };
      for (const [k, v] of c.headers) headers[k] = v;
      const claimed = {
        exact: c.body.length,
        more: c.body.length + 7,
        less: Math.max(0, c.body.length - 3),
        huge: 0xffffffff,
      }[c.claimed];
      const prefix = Buffer.alloc(5);
      prefix[0] = c.flag;
      prefix.writeUInt32BE(claimed, 1);
      const status = await new Promise<string | null>((resolve) => {
        const s = h2.request(headers);
        let got: string | null = null;
        const grab = (h: Record<string, unknown>) => {
          if (h['grpc-status'] !== undefined) got = String(h['grpc-status']);
          else if (h[':status'] !== undefined && h[':status'] !== 200) got = `http ${h[':status']}`;
          if (got !== null) resolve(got);
        };
        s.on('response', grab)
          .on('trailers', grab)
          .on('error', () => {});
        s.on('close', () => resolve(got));
        s.resume();
        s.write(Buffer.concat([prefix, c.body]));
        if (c.end) s.end();
        // A stream left open with part of a message is the client's to finish: the server may wait.
        setTimeout(() => resolve(c.end ? 'no answer' : got), c.end ? PROBE_MS : 100).unref();
      });
      if (status === 'no answer')
        throw new CaseFailure(
          'violation',
          `a complete stream to ${path.slice(0, 60)} got no status within ${PROBE_MS} ms`,
        );
      return status === '0' ? 'accepted' : 'refused';
    } finally {
      h2.destroy();
    }
  }

  async function junk(bytes: Uint8Array): Promise<'refused'> {
    const open = server.stats().connections;
    await new Promise<void>((resolve) => {
      const s = connect(endpoint, () => s.end(Buffer.from(bytes)));
      s.on('error', () => {});
      s.on('close', () => resolve());
      s.resume();
      setTimeout(() => s.destroy(), 300).unref();
    });
    // The server sees a peer leave at once, unless it stopped reading (see KEEPALIVE_MS).
    for (let i = 0; i < 10 && server.stats().connections > open; i++) await systemClock.sleep(5);
    if (server.stats().connections > open) figures.heldAfterClose++;
    return 'refused';
  }

  const figures = { heldAfterClose: 0 };
  const notes: string[] = [];
  return {
    figures,
    notes,
    arbitrary: cacheCase,
    run: (c) => (c.kind === 'call' ? call(c) : c.kind === 'h2' ? stream(c) : junk(c.bytes)),
    async probe() {
      const fresh = newClient();
      try {
        for (const c of [main, fresh]) {
          const t0 = performance.now();
          const a = await unary(c, `${S}Status`, new Uint8Array(0), new Metadata(), PROBE_MS);
          if (a.code !== Code.OK || performance.now() - t0 > PROBE_MS)
            throw new Error(`Status: ${Code[a.code]} ${a.details}`);
          if (GrpcStatus.decode(a.value!).pid !== process.pid) throw new Error('Status from another server');
        }
      } finally {
        fresh.close();
      }
    },
    async finish() {
      const out: string[] = [];
      const excess = () => server.stats().connections - before.connections;
      // Closed connections go at once; those only the keepalive reclaims, within two of its periods.
      await systemClock.sleep(300);
      if (figures.heldAfterClose)
        notes.push(
          `${figures.heldAfterClose} connections held after their peer left, until the keepalive closed them`,
        );
      for (let i = 0; i < 150 && excess() > 0; i++) await systemClock.sleep(20);
      await settle();
      const now = server.stats();
      if (now.leases !== before.leases) out.push(`leases ${before.leases} → ${now.leases}`);
      if (now.connections > before.connections)
        out.push(`connections ${before.connections} → ${now.connections}`);
      // Each VM taken from the pool was handed out or stopped (a GetBaseVM the client gave up on): none is held.
      if (taken() - takenBefore !== vms.handed + vms.stopped)
        out.push(
          `${taken() - takenBefore} VMs taken from the pool, ${vms.handed} handed out, ${vms.stopped} stopped`,
        );
      return out;
    },
    async close() {
      main.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
