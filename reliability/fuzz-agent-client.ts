/**
 * Fuzz target 3b: guest frames → the host's `AgentClient`, over an in-memory connection and a manual clock (so
 * that timeouts cost no time). Each case: junk before the handshake, a good, wrong or missing hello-ok, a few
 * requests, then random guest frames (replies to those ids and others, output and exits of real and made-up
 * processes, garbage), then time passes. Nothing may escape; every request, handshake and process wait must
 * settle with a value or a VmcError once its timeout has passed (the pending table stays bounded).
 */
import fc from 'fast-check';
import { isVmcError } from '../src/errors.js';
import { AgentServer } from '../src/guest/agent/server.js';
import { AgentClient, type AgentProcess } from '../src/protocol/agent/client.js';
import { FrameDecoder } from '../src/protocol/agent/framing.js';
import { duplexPair } from '../test/helpers/duplex-pair.js';
import { ManualClock, observe } from '../test/helpers/manual-clock.js';
import { probeAgent } from './fuzz-agent.js';
import {
  CaseFailure,
  deepNesting,
  describeError,
  type FuzzOptions,
  hostileValue,
  mutated,
  settle,
  someId,
  type Target,
} from './fuzz-common.js';
import { bytesOf, type Chunk, chunkOf } from './fuzz-frames.js';

/** Stands for the nonce of the client's hello, filled in when the frame is sent. */
const NONCE = '$nonce';
const REQUEST_TIMEOUT_MS = 1_000;
const anyOf = <T>(plausible: fc.Arbitrary<T>) =>
  fc.oneof(
    { weight: 3, arbitrary: plausible as fc.Arbitrary<unknown> },
    { weight: 1, arbitrary: hostileValue },
  );
/** Request ids and process numbers the client will have used (it numbers requests from 1): 1 to 4, mostly. */
const near = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 4 }) },
  { weight: 1, arbitrary: someId },
);

/** A guest → host message of every type, fields mutated; replies to pending requests the most. */
const guestMessage: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 1,
    arbitrary: mutated(fc.record({ t: fc.constant('ready'), version: someId }), ['t', 'version']),
  },
  {
    weight: 1,
    arbitrary: mutated(
      fc.record({
        t: fc.constant('hello-ok'),
        nonce: anyOf(fc.constantFrom(NONCE, 'other')),
        version: someId,
        session: someId,
        agentPid: someId,
      }),
      ['t', 'nonce', 'session', 'agentPid'],
    ),
  },
  {
    weight: 3,
    arbitrary: mutated(
      fc.record({
        t: fc.constant('res'),
        id: near,
        ok: fc.oneof(
          { weight: 3, arbitrary: fc.constant(true) },
          { weight: 1, arbitrary: fc.constant(false) },
          { weight: 1, arbitrary: hostileValue },
        ),
        result: fc.oneof(
          { weight: 2, arbitrary: fc.record({ proc: near, pid: someId }) },
          { weight: 1, arbitrary: fc.constantFrom({ pong: true }, { running: false }, null) },
          { weight: 2, arbitrary: hostileValue },
          { weight: 2, arbitrary: deepNesting }, // what an exec reply's result can be: the client must not walk it
        ),
        error: mutated(fc.record({ code: anyOf(fc.constant('FAILED')), message: anyOf(fc.string()) }), [
          'code',
          'message',
        ]),
      }),
      ['t', 'id', 'ok', 'result', 'error'],
    ),
  },
  {
    weight: 1,
    arbitrary: mutated(
      fc.record({
        t: fc.constant('out'),
        proc: near,
        fd: anyOf(fc.constantFrom(1, 2, 3, 0)),
        data: anyOf(fc.base64String({ maxLength: 40 })),
      }),
      ['t', 'proc', 'fd', 'data'],
    ),
  },
  {
    weight: 1,
    arbitrary: mutated(
      fc.record({
        t: fc.constant('exit'),
        proc: near,
        code: anyOf(fc.constantFrom(0, 1, 255, -1, null)),
        signal: anyOf(fc.constantFrom(null, 'SIGTERM')),
      }),
      ['t', 'proc', 'code', 'signal'],
    ),
  },
);

/** A case: what the guest says before and after the handshake, which requests the host makes, time passing. */
export interface ClientCase {
  before: Chunk[];
  helloOk: 'good' | 'wrong' | 'none';
  requests: Array<'ping' | 'exec' | 'info' | 'stdin'>;
  after: Chunk[];
  advanceMs: number;
}

/** `c` with the client's nonce where NONCE stands. */
function withNonce(c: Chunk, nonce: string): Chunk {
  if (
    !('msg' in c) ||
    typeof c.msg !== 'object' ||
    c.msg === null ||
    (c.msg as { nonce?: unknown }).nonce !== NONCE
  )
    return c;
  return { ...c, msg: { ...c.msg, nonce } };
}

type Observed = ReturnType<typeof observe<unknown>>;

/**
 * Nothing when settled with a value or a VmcError; otherwise the failure: still pending past its timeout (a
 * violation: the pending table grows), or rejected with anything else (a crash, as a throw would be).
 */
function problemOf(what: string, o: Observed): CaseFailure | null {
  if (o.state === 'pending') return new CaseFailure('violation', `${what} still pending`);
  if (o.state === 'rejected' && !isVmcError(o.error))
    return new CaseFailure('crash', `${what} rejected with ${describeError(o.error)}`);
  return null;
}

/** Target 3b: a client per case; the probe is a real agent's handshake and ping. */
export async function agentClientTarget(_opts: FuzzOptions): Promise<Target<ClientCase>> {
  const server = new AgentServer({
    reseed: async () => {},
    setTime: async () => {},
    online: async () => ({ cpus: 1, memoryBlocks: 0 }),
    mountShared: async () => ({ path: '/nonexistent' }),
    syncShared: async () => {},
    containerCommand: async () => ({ file: '/nonexistent/vmc-helper', args: [] }),
    signalCgroup: async () => 0,
    updateCgroup: async () => false,
    cgroupStats: async () => null,
    waitForNic: async () => 'eth0',
    spareNic: async () => 'eth0',
    configureNic: async () => {},
    warm: async () => {},
    churn: async () => {},
    info: async () => ({}),
    shutdown: async () => {},
  });
  return {
    arbitrary: fc.record({
      before: fc.array(chunkOf(guestMessage), { maxLength: 3 }),
      helloOk: fc.constantFrom<ClientCase['helloOk']>('good', 'good', 'good', 'good', 'wrong', 'none'),
      requests: fc.array(fc.constantFrom<ClientCase['requests'][number]>('ping', 'exec', 'info', 'stdin'), {
        maxLength: 4,
      }),
      after: fc.array(chunkOf(guestMessage), { maxLength: 8 }),
      advanceMs: fc.constantFrom(0, 300, 1_500, 30_000),
    }),
    async run(c) {
      const clock = new ManualClock();
      const [host, guest] = duplexPair();
      const client = new AgentClient(host, {
        clock,
        requestTimeoutMs: REQUEST_TIMEOUT_MS,
        livenessIntervalMs: 500,
      });
      let nonce = '';
      const sent = new FrameDecoder();
      guest.on('data', (b: Buffer) => {
        for (const f of sent.push(b))
          if (f.ok && (f.value as { t?: unknown }).t === 'hello')
            nonce = String((f.value as { nonce: unknown }).nonce);
      });
      const hs = observe(client.handshake(2_000, 100));
      await settle();
      for (const k of c.before) guest.write(bytesOf(withNonce(k, nonce)));
      if (c.helloOk !== 'none')
        guest.write(
          bytesOf({
            kind: 'frame',
            msg: {
              t: 'hello-ok',
              nonce: c.helloOk === 'good' ? nonce : 'x',
              version: 1,
              session: 1,
              agentPid: 1,
            },
          }),
        );
      await settle();
      const calls: Array<[string, Observed]> = [];
      const procs: AgentProcess[] = [];
      if (hs.state === 'resolved')
        for (const r of c.requests) {
          const p =
            r === 'exec'
              ? client.exec({ args: ['/bin/true'] }).then((proc) => {
                  procs.push(proc);
                  return proc;
                })
              : r === 'stdin'
                ? client.request({ op: 'stdin', proc: 1, data: '' })
                : client.request({ op: r });
          calls.push([r, observe(p)]);
        }
      await settle();
      for (const k of c.after) guest.write(bytesOf(withNonce(k, nonce)));
      await clock.advance(c.advanceMs);
      // Past the request timeout, nothing the host asked for may still wait: the pending table is bounded.
      if (c.advanceMs > REQUEST_TIMEOUT_MS)
        for (const [what, o] of calls) {
          const p = problemOf(`${what} ${c.advanceMs} ms after it was sent`, o);
          if (p) throw p;
        }
      const waits = procs.map((p) => observe(p.wait()));
      client.close();
      await clock.advance(5_000);
      const problem =
        problemOf('the handshake', hs) ??
        calls.map(([what, o]) => problemOf(what, o)).find(Boolean) ??
        waits.map((o) => problemOf('a process wait after close', o)).find(Boolean) ??
        null;
      if (problem) throw problem;
      const refusedAny = hs.state === 'rejected' || calls.some(([, o]) => o.state === 'rejected');
      return refusedAny ? 'refused' : 'accepted';
    },
    probe: () => probeAgent(server),
    async finish() {
      return [];
    },
    async close() {},
  };
}
