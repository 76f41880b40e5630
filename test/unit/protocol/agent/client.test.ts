import assert from 'node:assert/strict';
import type { Duplex, Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../../src/errors.js';
import type { Logger } from '../../../../src/platform/logger.js';
import { AgentClient, type AgentClientOptions } from '../../../../src/protocol/agent/client.js';
import { encodeFrame, FrameDecoder } from '../../../../src/protocol/agent/framing.js';
import { duplexPair } from '../../../helpers/duplex-pair.js';
import { ManualClock, observe, settle } from '../../../helpers/manual-clock.js';

type Req = { t: string; id: number; op: string; [k: string]: unknown };

/**
 * A scripted guest agent on the far end of an in-memory pair: it answers the handshake itself and hands every
 * request to `onRequest`, which writes whatever bytes the test wants (several frames in one chunk, or nothing).
 */
function fakeAgent(guest: Duplex, onRequest: (req: Req, reply: (...frames: unknown[]) => void) => void) {
  const decoder = new FrameDecoder();
  const requests: Req[] = [];
  const reply = (...frames: unknown[]) => guest.write(Buffer.concat(frames.map((f) => encodeFrame(f))));
  guest.on('data', (c: Buffer) => {
    for (const f of decoder.push(c)) {
      if (!f.ok) continue;
      const m = f.value as Req;
      if (m.t === 'hello') reply({ t: 'hello-ok', nonce: m.nonce, version: 1, session: 1, agentPid: 1 });
      else if (m.t === 'req') {
        requests.push(m);
        onRequest(m, reply);
      }
    }
  });
  return { requests, reply };
}

/** A client connected to a fake agent, handshaken. */
async function connect(
  onRequest: (req: Req, reply: (...frames: unknown[]) => void) => void,
  opts: AgentClientOptions = {},
) {
  const [host, guest] = duplexPair();
  const agent = fakeAgent(guest, onRequest);
  const client = new AgentClient(host, opts);
  await client.handshake(2_000, 20);
  return { client, agent, guest };
}

/** All a stream delivers until it ends. */
function drain(s: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve) => s.once('end', () => resolve(Buffer.concat(chunks).toString())));
}

/** `p`, or a rejection after `ms`: a regression must fail the test, not hang it. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}

const b64 = (s: string) => Buffer.from(s).toString('base64');

/** A logger that keeps its debug traces. */
function recordingLogger(): Logger & { traces: Array<{ obj: Record<string, unknown>; msg: string }> } {
  const traces: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  const logger = {
    traces,
    debug: (obj: Record<string, unknown>, msg: string) => void traces.push({ obj, msg }),
    info() {},
    warn() {},
    error() {},
    child: () => logger,
  };
  return logger;
}

const INTERVAL = 1_000;
const TIMEOUT = 5_000;

/**
 * A client on a fake agent whose exec starts process 1 (guest pid 100) and whose `proc-status` answer is what
 * `status()` returns at the time (undefined: no answer at all).
 */
async function withProcess(status: (req: Req) => unknown, opts: AgentClientOptions = {}) {
  const clock = new ManualClock();
  const conn = await connect(
    (req, reply) => {
      if (req.op === 'exec') reply({ t: 'res', id: req.id, ok: true, result: { proc: 1, pid: 100 } });
      if (req.op !== 'proc-status') return;
      const answer = status(req);
      if (answer !== undefined) reply(answer);
    },
    { clock, livenessIntervalMs: INTERVAL, requestTimeoutMs: TIMEOUT, name: 'vm-7', ...opts },
  );
  const p = await conn.client.exec({ args: ['/bin/sleep', '1000'] });
  const waited = observe(p.wait());
  const probes = () => conn.agent.requests.filter((r) => r.op === 'proc-status');
  return { ...conn, clock, p, waited, probes };
}

const running = (yes: boolean) => (req: Req) => ({
  t: 'res',
  id: req.id,
  ok: true,
  result: { running: yes },
});

describe('AgentClient process tracking', () => {
  it('delivers output and exit that arrive in the same chunk as the exec reply', {
    timeout: 10_000,
  }, async () => {
    const { client } = await connect((req, reply) => {
      if (req.op !== 'exec') return;
      // One write, hence one 'data' chunk on the host: reply, output and exit of a fast process together.
      reply(
        { t: 'res', id: req.id, ok: true, result: { proc: 7, pid: 4242 } },
        { t: 'out', proc: 7, fd: 1, data: b64('hello\n') },
        { t: 'out', proc: 7, fd: 2, data: b64('oops\n') },
        { t: 'exit', proc: 7, code: 3, signal: null },
      );
    });
    const p = await client.exec({ args: ['/bin/true'] });
    assert.equal(p.proc, 7);
    assert.equal(p.pid, 4242);
    const [stdout, stderr] = [drain(p.stdout), drain(p.stderr)];
    assert.deepEqual(await within(p.wait(), 2_000, 'wait()'), { code: 3, signal: null });
    assert.equal(await within(stdout, 2_000, 'stdout'), 'hello\n');
    assert.equal(await within(stderr, 2_000, 'stderr'), 'oops\n');
    client.close();
  });

  it('run() collects all the output when the exec reply, the output and the exit come in one chunk', {
    timeout: 10_000,
  }, async () => {
    // Found by the reliability suite (1 hand-off in 300 lost its output): wait() resolved on a microtask
    // before the buffered output had been emitted to listeners attached after exec() resolved.
    const { client } = await connect((req, reply) => {
      if (req.op !== 'exec') return;
      reply(
        { t: 'res', id: req.id, ok: true, result: { proc: 8, pid: 4243 } },
        { t: 'out', proc: 8, fd: 1, data: b64('token\n') },
        { t: 'out', proc: 8, fd: 2, data: b64('err\n') },
        { t: 'exit', proc: 8, code: 0, signal: null },
      );
    });
    const r = await within(client.run({ args: ['/bin/echo', 'token'] }), 2_000, 'run()');
    assert.deepEqual(
      { code: r.code, signal: r.signal, out: r.stdout.toString(), err: r.stderr.toString() },
      { code: 0, signal: null, out: 'token\n', err: 'err\n' },
    );
    client.close();
  });

  it('drops frames of processes no exec reply claimed, with a debug trace, keeping none', async () => {
    const logger = recordingLogger();
    const { client, agent } = await connect(
      (req, reply) => {
        // The exec names the proc id the test wants, to reuse one whose frames were dropped.
        if (req.op === 'exec') reply({ t: 'res', id: req.id, ok: true, result: req.exec });
      },
      { logger },
    );
    // Output and exits of 500 processes whose exec reply never reached this client (its request timed out).
    const stray = Array.from({ length: 500 }, (_, i) => [
      { t: 'out', proc: 1000 + i, fd: 1, data: b64('x'.repeat(1000)) },
      { t: 'exit', proc: 1000 + i, code: 0, signal: null },
    ]).flat();
    agent.reply(...stray);
    await settle();
    const dropped = logger.traces.filter((t) => /dropped a frame of an unknown guest process/.test(t.msg));
    assert.equal(dropped.length, 1000);
    assert.deepEqual(dropped[1]!.obj, { proc: 1000, frame: 'exit' });
    // Nothing was kept for them: a process registered under one of those ids gets only its own frames.
    const p = await client.exec({ args: ['x'], proc: 1000, pid: 1 } as never);
    const waited = observe(p.wait());
    const stdout = drain(p.stdout);
    await settle();
    assert.equal(waited.state, 'pending');
    agent.reply(
      { t: 'out', proc: 1000, fd: 1, data: b64('mine') },
      { t: 'exit', proc: 1000, code: 9, signal: null },
    );
    assert.equal(await within(stdout, 2_000, 'stdout'), 'mine');
    assert.deepEqual(waited.value, { code: 9, signal: null });
    client.close();
  });

  it('rejects an exec reply that names no process', async () => {
    const { client } = await connect((req, reply) => reply({ t: 'res', id: req.id, ok: true, result: null }));
    await assert.rejects(client.exec({ args: ['x'] }), (e) => isVmcError(e, 'VMC_ERR_AGENT_PROTOCOL'));
    client.close();
  });
});

describe('AgentClient liveness checks', () => {
  it('asks the agent about a process after livenessIntervalMs without a frame about it', async () => {
    const { client, clock, probes, waited } = await withProcess(running(true));
    await clock.advance(INTERVAL - 1);
    assert.equal(probes().length, 0);
    await clock.advance(1);
    assert.deepEqual(
      probes().map((r) => [r.op, r.proc]),
      [['proc-status', 1]],
    );
    assert.equal(waited.state, 'pending');
    client.close();
  });

  it('rejects wait() with VMC_ERR_AGENT_PROCESS_LOST, naming the VM and the process, when the agent says it is not running', async () => {
    const { client, clock, waited, p } = await withProcess(running(false));
    await clock.advance(INTERVAL);
    assert.equal(waited.state, 'rejected');
    const err = waited.error;
    assert.ok(isVmcError(err, 'VMC_ERR_AGENT_PROCESS_LOST'), String(err));
    assert.match(err.message, /guest process 1 \(pid 100\) in VM vm-7 is lost/);
    assert.deepEqual(err.details, { vm: 'vm-7', proc: 1, pid: 100 });
    // Later callers get the same answer, and the streams are ended.
    await assert.rejects(p.wait(), (e) => e === err);
    assert.ok(p.stdout.writableEnded && p.stderr.writableEnded);
    client.close();
  });

  it('keeps waiting while the agent says the process runs, until its exit', async () => {
    const { client, clock, waited, probes, agent } = await withProcess(running(true));
    for (let i = 1; i <= 3; i++) {
      await clock.advance(INTERVAL);
      assert.equal(probes().length, i);
      assert.equal(waited.state, 'pending');
    }
    agent.reply({ t: 'exit', proc: 1, code: 0, signal: null });
    await settle();
    assert.deepEqual(waited.value, { code: 0, signal: null });
    await clock.advance(10 * INTERVAL);
    assert.equal(probes().length, 3, 'no checks once the process exited');
    client.close();
  });

  it('sends no check while output keeps arriving', async () => {
    const { client, clock, probes, agent, p } = await withProcess(running(true));
    const stdout: Buffer[] = [];
    p.stdout.on('data', (c: Buffer) => stdout.push(c));
    for (let i = 0; i < 10; i++) {
      await clock.advance(INTERVAL * 0.6);
      agent.reply({ t: 'out', proc: 1, fd: 1, data: b64(`${i}`) });
    }
    await settle();
    assert.equal(probes().length, 0);
    assert.equal(Buffer.concat(stdout).toString(), '0123456789');
    await clock.advance(INTERVAL);
    assert.equal(probes().length, 1, 'silence brings the check back');
    client.close();
  });

  it('reports the process lost when the agent does not answer the check within the request timeout', async () => {
    const { client, clock, waited, probes } = await withProcess(() => undefined);
    await clock.advance(INTERVAL);
    assert.equal(probes().length, 1);
    await clock.advance(TIMEOUT - 1);
    assert.equal(waited.state, 'pending');
    await clock.advance(1);
    const err = waited.error;
    assert.ok(isVmcError(err, 'VMC_ERR_AGENT_PROCESS_LOST'), String(err));
    assert.match(
      err.message,
      /in VM vm-7 is lost: the guest agent did not answer a liveness check within 5000 ms/,
    );
    assert.ok(isVmcError(err.cause, 'VMC_ERR_AGENT_TIMEOUT'));
    client.close();
  });

  it('names the process without a VM when the client has no name', async () => {
    const { client, clock, waited } = await withProcess(running(false), { name: undefined });
    await clock.advance(INTERVAL);
    assert.ok(isVmcError(waited.error, 'VMC_ERR_AGENT_PROCESS_LOST'));
    assert.match(
      waited.error.message,
      /^guest process 1 \(pid 100\) is lost: the guest agent no longer knows it/,
    );
    client.close();
  });

  it('neither checks nor reports a loss while suspended (a frozen guest), and counts silence afresh after', async () => {
    let answer = false; // unanswered until the guest "thaws"
    const { client, clock, waited, probes } = await withProcess((req) =>
      answer ? running(true)(req) : undefined,
    );
    await clock.advance(INTERVAL);
    assert.equal(probes().length, 1, 'a check in flight when the guest is frozen');
    client.suspendLiveness();
    await clock.advance(TIMEOUT + 10 * INTERVAL);
    assert.equal(waited.state, 'pending');
    assert.equal(probes().length, 1);
    client.resumeLiveness();
    answer = true;
    await clock.advance(INTERVAL - 1);
    assert.equal(probes().length, 1);
    await clock.advance(1);
    assert.equal(probes().length, 2);
    assert.equal(waited.state, 'pending');
    client.close();
  });

  it('stops checking, and keeps waiting, when the agent does not know proc-status (an older image)', async () => {
    const { client, clock, waited, probes, agent } = await withProcess((req) => ({
      t: 'res',
      id: req.id,
      ok: false,
      error: { code: 'BAD_REQUEST', message: 'unknown op "proc-status"' },
    }));
    await clock.advance(10 * INTERVAL);
    assert.equal(probes().length, 1);
    assert.equal(waited.state, 'pending');
    agent.reply({ t: 'exit', proc: 1, code: 2, signal: null });
    await settle();
    assert.deepEqual(waited.value, { code: 2, signal: null });
    client.close();
  });

  it('reports the process lost when the agent restarted (it answers NO_SESSION: the session and its processes are gone)', async () => {
    // Found by the reliability suite: the guest agent killed mid exec is restarted by the guest's init; it
    // answers every request of the old session with NO_SESSION, and the exec's exit never comes.
    const { client, clock, waited } = await withProcess((req) => ({
      t: 'res',
      id: req.id,
      ok: false,
      error: { code: 'NO_SESSION', message: 'send hello first' },
    }));
    await clock.advance(INTERVAL);
    assert.ok(isVmcError(waited.error, 'VMC_ERR_AGENT_PROCESS_LOST'), String(waited.error));
    assert.match(waited.error.message, /the guest agent restarted and no longer knows this session/);
    client.close();
  });

  it('rejects a liveness interval that is not a positive number, naming the option', () => {
    const [host] = duplexPair();
    assert.throws(
      () => new AgentClient(host, { livenessIntervalMs: 0 }),
      (e) => isVmcError(e, 'VMC_ERR_CONFIG_INVALID') && /livenessIntervalMs .* got 0/.test(e.message),
    );
    host.destroy();
  });
});

/** A manual clock that counts its live timers: a request that is over must leave none behind. */
class CountingClock extends ManualClock {
  live = 0;
  override setTimeout(fn: () => void, ms: number): () => void {
    this.live++;
    let done = false;
    const end = () => {
      if (!done) this.live--;
      done = true;
    };
    const cancel = super.setTimeout(() => {
      end();
      fn();
    }, ms);
    return () => {
      end();
      cancel();
    };
  }
}

describe('AgentClient requests', () => {
  it('rejects a request too large for one frame with VMC_ERR_AGENT_FRAME_TOO_LARGE at once, leaving nothing pending', async () => {
    const clock = new CountingClock();
    const { client, agent } = await connect(
      (req, reply) => reply({ t: 'res', id: req.id, ok: true, result: 'pong' }),
      { clock, requestTimeoutMs: TIMEOUT },
    );
    assert.equal(clock.live, 0, 'the handshake left a timer');
    const huge = observe(client.exec({ args: ['/bin/echo', 'x'.repeat(1024 * 1024)] }));
    await settle();
    assert.equal(huge.state, 'rejected');
    assert.ok(isVmcError(huge.error, 'VMC_ERR_AGENT_FRAME_TOO_LARGE'), String(huge.error));
    assert.equal(clock.live, 0, 'the refused request left its timer behind');
    assert.deepEqual(agent.requests, [], 'the refused request was sent');
    // The connection is unharmed: the next request is answered, and its timer goes with its reply.
    assert.equal(await client.request({ op: 'ping' }), 'pong');
    assert.equal(clock.live, 0);
    client.close();
  });

  it('fails the requests still waiting when the connection closes, and stops their timers', async () => {
    const clock = new CountingClock();
    const { client, guest } = await connect(() => {}, { clock, requestTimeoutMs: TIMEOUT });
    const a = observe(client.request({ op: 'ping' }));
    const b = observe(client.request({ op: 'sync' }));
    await settle();
    assert.equal(clock.live, 2);
    guest.end();
    await settle();
    for (const o of [a, b]) assert.ok(isVmcError(o.error, 'VMC_ERR_AGENT_CLOSED'), String(o.error));
    assert.equal(clock.live, 0);
  });

  it('fails a request whose reply has invalid guest times with VMC_ERR_AGENT_PROTOCOL at once, naming the field', async () => {
    const clock = new CountingClock();
    const errors: string[] = [];
    const { client } = await connect(
      (req, reply) => reply({ t: 'res', id: req.id, ok: true, result: 'pong', gt: { rx: 9, tx: 3 } }),
      { clock, requestTimeoutMs: TIMEOUT },
    );
    client.on('protocol-error', (e: string) => errors.push(e));
    const p = observe(client.request({ op: 'ping' }));
    await settle();
    assert.equal(p.state, 'rejected');
    assert.ok(isVmcError(p.error, 'VMC_ERR_AGENT_PROTOCOL'), String(p.error));
    assert.match(
      (p.error as Error).message,
      /guest agent ping: invalid reply: res\.gt .* rx 9 is after tx 3/,
    );
    assert.equal(errors.length, 1);
    assert.equal(clock.live, 0, 'the failed request left its timer');
    client.close();
  });

  it('traces a request: host send and receive times, and the guest times of its reply (null without them)', async () => {
    const clock = new CountingClock();
    const { client } = await connect(
      (req, reply) =>
        reply(
          req.op === 'ping'
            ? { t: 'res', id: req.id, ok: true, result: 'pong', gt: { rx: 100, tx: 180 } }
            : { t: 'res', id: req.id, ok: true, result: null },
        ),
      { clock, requestTimeoutMs: TIMEOUT },
    );
    const t = await client.requestTraced({ op: 'ping' });
    assert.equal(t.result, 'pong');
    assert.deepEqual(
      { ...t.trace, sentMs: 0, receivedMs: 0 },
      {
        op: 'ping',
        sentMs: 0,
        receivedMs: 0,
        guest: { rx: 100, tx: 180 },
      },
    );
    assert.ok(t.trace.sentMs <= t.trace.receivedMs);
    assert.equal((await client.requestTraced({ op: 'sync' })).trace.guest, null);
    // The handshake of this fake agent sends no times either.
    assert.equal(client.session!.trace.guest, null);
    client.close();
  });

  it('times a request out with VMC_ERR_AGENT_TIMEOUT naming the op, and ignores its late reply', async () => {
    const clock = new CountingClock();
    let late: (() => void) | undefined;
    const { client } = await connect(
      (req, reply) => {
        late = () => reply({ t: 'res', id: req.id, ok: true, result: 'late' });
      },
      { clock, requestTimeoutMs: TIMEOUT },
    );
    const p = observe(client.request({ op: 'ping' }));
    await clock.advance(TIMEOUT);
    assert.ok(isVmcError(p.error, 'VMC_ERR_AGENT_TIMEOUT'), String(p.error));
    assert.match((p.error as Error).message, /did not answer ping within 5000 ms/);
    assert.equal(clock.live, 0);
    late?.();
    await settle();
    assert.equal(client.closed, false);
    client.close();
  });
});
