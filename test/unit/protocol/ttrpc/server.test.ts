import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { after, describe, it } from 'node:test';
import { isVmcError, VmcError } from '../../../../src/errors.js';
import type { Logger } from '../../../../src/platform/logger.js';
import { connectUnixSocket } from '../../../../src/platform/unix-socket.js';
import { TaskDefinition } from '../../../../src/protocol/shim/generated/containerd/runtime/task/v2/shim.js';
import { Status } from '../../../../src/protocol/shim/generated/containerd/types/task/task.js';
import { TtrpcClient } from '../../../../src/protocol/ttrpc/client.js';
import { encodeFrame, type Frame, FrameReader, MessageType } from '../../../../src/protocol/ttrpc/frame.js';
import { Request, Response } from '../../../../src/protocol/ttrpc/generated/ttrpc/request.js';
import { TtrpcServer, type TtrpcServerOptions } from '../../../../src/protocol/ttrpc/server.js';
import type { CallContext, ServiceImplementation } from '../../../../src/protocol/ttrpc/service.js';
import { RpcCode, rpcCodeOf, statusError } from '../../../../src/protocol/ttrpc/status.js';
import { withDeadline } from '../../../helpers/deadline.js';
import { duplexPair } from '../../../helpers/duplex-pair.js';
import { ManualClock, settle } from '../../../helpers/manual-clock.js';

const TASK = 'containerd.task.v2.Task';

/** A logger that keeps its records. */
function recordingLogger(): Logger & { records: Array<{ level: string; msg: string; obj: object }> } {
  const records: Array<{ level: string; msg: string; obj: object }> = [];
  const make = (): Logger => ({
    debug: (obj, msg) => records.push({ level: 'debug', msg, obj }),
    info: (obj, msg) => records.push({ level: 'info', msg, obj }),
    warn: (obj, msg) => records.push({ level: 'warn', msg, obj }),
    error: (obj, msg) => records.push({ level: 'error', msg, obj }),
    child: () => make(),
  });
  return Object.assign(make(), { records });
}

/** A Task service stub: Connect echoes the id, State can be told what to do. */
function taskStub(
  extra: ServiceImplementation<typeof TaskDefinition> = {},
): ServiceImplementation<typeof TaskDefinition> {
  return {
    connect: async (req, ctx) => ({
      shimPid: 42,
      taskPid: 7,
      version: `${req.id}|${ctx.metadata.get('containerd-namespace-ttrpc')?.join(',') ?? ''}`,
    }),
    ...extra,
  };
}

function inMemory(impl = taskStub(), opts: TtrpcServerOptions = {}) {
  const server = new TtrpcServer(opts);
  server.register(TaskDefinition, impl);
  const [a, b] = duplexPair();
  server.serve(a);
  const client = new TtrpcClient(b, { clock: opts.clock });
  return { server, client, peer: b };
}

/** The rpc code a call was rejected with. */
async function codeOf(p: Promise<unknown>): Promise<number | undefined> {
  try {
    await p;
  } catch (e) {
    return rpcCodeOf(e);
  }
  assert.fail('the call succeeded');
}

function requestFrame(streamId: number, req: Partial<Request>): Buffer {
  const data = Request.encode(Request.fromPartial({ service: TASK, method: 'Connect', ...req })).finish();
  return encodeFrame({ streamId, type: MessageType.Request, flags: 0, data });
}

/** Reads response frames a raw peer receives. */
function rawReader(stream: Duplex): { frames: Frame[]; next(n: number): Promise<Frame[]> } {
  const reader = new FrameReader();
  const frames: Frame[] = [];
  let wake: (() => void) | null = null;
  stream.on('data', (c: Buffer) => {
    frames.push(...reader.push(c));
    wake?.();
  });
  return {
    frames,
    next: (n) =>
      withDeadline(`${n} frames`, 2000, async () => {
        while (frames.length < n) await new Promise<void>((r) => (wake = r));
        return frames.slice(0, n);
      }),
  };
}

async function until(what: string, cond: () => boolean): Promise<void> {
  await withDeadline(what, 3000, async () => {
    while (!cond()) await new Promise((r) => setTimeout(r, 2));
  });
}

describe('ttrpc server over an in-memory duplex', () => {
  it('round-trips a generated message through containerd.task.v2.Task/Connect, with metadata', async () => {
    const { client } = inMemory();
    const res = await client.call(
      TaskDefinition,
      'connect',
      { id: 'task-1' },
      { metadata: [['containerd-namespace-ttrpc', 'k8s.io']] },
    );
    assert.deepEqual(res, { shimPid: 42, taskPid: 7, version: 'task-1|k8s.io' });
    client.close();
  });

  it('round-trips enums, timestamps and uint32 through State', async () => {
    const { client } = inMemory(
      taskStub({
        state: async (req) => ({
          id: req.id,
          bundle: '/b',
          pid: 0xffff_fffe,
          status: Status.STOPPED,
          stdin: '',
          stdout: '/f/out',
          stderr: '',
          terminal: true,
          exitStatus: 137,
          exitedAt: { seconds: 1_700_000_000n, nanos: 123_456_789 },
          execId: req.execId,
        }),
      }),
    );
    const res = await client.call(TaskDefinition, 'state', { id: 'c', execId: 'e' });
    assert.equal(res.status, Status.STOPPED);
    assert.equal(res.pid, 0xffff_fffe);
    assert.deepEqual(res.exitedAt, { seconds: 1_700_000_000n, nanos: 123_456_789 });
    assert.equal(res.execId, 'e');
    client.close();
  });

  it('answers an unknown service or method Unimplemented, as ttrpc does ("service X", "method Y")', async () => {
    const { client } = inMemory();
    await assert.rejects(client.callRaw('containerd.task.v3.Task', 'Connect', new Uint8Array()), (e) => {
      assert.ok(isVmcError(e, 'VMC_ERR_TTRPC_STATUS'));
      assert.equal(rpcCodeOf(e), RpcCode.Unimplemented);
      assert.match(e.message, /service containerd\.task\.v3\.Task/);
      return true;
    });
    assert.equal(await codeOf(client.callRaw(TASK, 'Nope', new Uint8Array())), RpcCode.Unimplemented);
    // A method of the definition that has no handler is as unknown as one that is not in it.
    assert.equal(
      await codeOf(client.call(TaskDefinition, 'checkpoint', { id: 'c', path: '', options: undefined })),
      RpcCode.Unimplemented,
    );
    client.close();
  });

  it('answers a payload that does not decode InvalidArgument', async () => {
    const { client } = inMemory();
    // Field 1, length-delimited, announcing 5 bytes with 1 present.
    const code = await codeOf(client.callRaw(TASK, 'Connect', Buffer.from([0x0a, 0x05, 0x41])));
    assert.equal(code, RpcCode.InvalidArgument);
    client.close();
  });

  it("answers a handler's status error with its code, a mapped VmcError with the mapping, a crash Internal", async () => {
    const logger = recordingLogger();
    const { client } = inMemory(
      taskStub({
        state: async (req) => {
          if (req.id === 'gone') throw statusError(RpcCode.NotFound, 'task gone: not found');
          if (req.id === 'mapped') throw new VmcError('VMC_ERR_CONTAINER_NOT_FOUND', 'no container mapped');
          throw new TypeError('boom');
        },
      }),
      {
        logger,
        statusOf: (e) =>
          isVmcError(e, 'VMC_ERR_CONTAINER_NOT_FOUND')
            ? { code: RpcCode.NotFound, message: e.message }
            : undefined,
      },
    );
    await assert.rejects(client.call(TaskDefinition, 'state', { id: 'gone', execId: '' }), (e) => {
      assert.equal(rpcCodeOf(e), RpcCode.NotFound);
      assert.match((e as Error).message, /^NotFound: task gone: not found$/);
      return true;
    });
    assert.equal(
      await codeOf(client.call(TaskDefinition, 'state', { id: 'mapped', execId: '' })),
      RpcCode.NotFound,
    );
    await assert.rejects(client.call(TaskDefinition, 'state', { id: 'x', execId: '' }), (e) => {
      assert.equal(rpcCodeOf(e), RpcCode.Internal);
      assert.match((e as Error).message, /boom/);
      return true;
    });
    assert.ok(logger.records.some((r) => r.level === 'error' && /handler failed/.test(r.msg)));
    client.close();
  });

  it('honours timeout_nano: at the deadline the handler is aborted and the client gets DeadlineExceeded', async () => {
    const clock = new ManualClock();
    let seen: CallContext | undefined;
    let finishLate: (() => void) | undefined;
    const server = new TtrpcServer({ clock });
    server.register(
      TaskDefinition,
      taskStub({
        wait: (_req, ctx) => {
          seen = ctx;
          return new Promise((resolve) => {
            finishLate = () => resolve({ exitStatus: 0, exitedAt: undefined });
          });
        },
      }),
    );
    const [a, b] = duplexPair();
    server.serve(a);
    const raw = rawReader(b);
    b.write(
      requestFrame(1, {
        method: 'Wait',
        payload: Buffer.from([0x0a, 0x01, 0x63]),
        timeoutNano: 50_000_000n,
      }),
    );
    await settle();
    assert.ok(seen);
    assert.equal(seen.deadline, 50);
    await clock.advance(49);
    assert.equal(raw.frames.length, 0);
    assert.equal(seen.signal.aborted, false);
    await clock.advance(1);
    const [f] = await raw.next(1);
    const res = Response.decode(f!.data);
    assert.equal(f!.streamId, 1);
    assert.equal(res.status?.code, RpcCode.DeadlineExceeded);
    assert.equal(seen.signal.aborted, true);
    // The handler's late answer is dropped: one response per stream.
    finishLate!();
    await settle();
    assert.equal(raw.frames.length, 1);
    assert.equal(clock.pending, 0);
    await server.close();
  });

  it('a client gets DeadlineExceeded from the server before its own timer (grace) fires', async () => {
    const clock = new ManualClock();
    const { client } = inMemory(taskStub({ wait: () => new Promise(() => {}) }), { clock });
    const p = client.call(TaskDefinition, 'wait', { id: 'c', execId: '' }, { timeoutMs: 100 });
    const code = codeOf(p);
    await clock.advance(100);
    assert.equal(await code, RpcCode.DeadlineExceeded);
    assert.equal(clock.pending, 0);
    client.close();
  });

  it('answers 100 concurrent requests on one connection, in any order, each on its own stream id', async () => {
    const resolvers: Array<() => void> = [];
    const { client } = inMemory(
      taskStub({
        connect: (req) =>
          new Promise((resolve) =>
            resolvers.push(() => resolve({ shimPid: 1, taskPid: 2, version: req.id })),
          ),
      }),
    );
    const calls = Array.from({ length: 100 }, (_, i) =>
      client.call(TaskDefinition, 'connect', { id: `t${i}` }),
    );
    await until('100 handlers running', () => resolvers.length === 100);
    // Answer in reverse, then odd ones before even ones: nothing depends on arrival order.
    for (const i of [...resolvers.keys()].reverse().filter((k) => k % 2 === 1)) resolvers[i]!();
    for (const i of [...resolvers.keys()].reverse().filter((k) => k % 2 === 0)) resolvers[i]!();
    const got = await Promise.all(calls);
    assert.deepEqual(
      got.map((r) => r.version),
      Array.from({ length: 100 }, (_, i) => `t${i}`),
    );
    assert.equal(client.inFlight, 0);
    client.close();
  });

  it('answers an even stream id InvalidArgument on that id, and goes on serving the connection', async () => {
    const server = new TtrpcServer();
    server.register(TaskDefinition, taskStub());
    const [a, b] = duplexPair();
    server.serve(a);
    const raw = rawReader(b);
    b.write(requestFrame(2, { payload: Buffer.from([0x0a, 0x01, 0x61]) }));
    b.write(requestFrame(3, { payload: Buffer.from([0x0a, 0x01, 0x62]) }));
    const [even, odd] = await raw.next(2);
    assert.equal(even!.streamId, 2);
    const evenRes = Response.decode(even!.data);
    assert.equal(evenRes.status?.code, RpcCode.InvalidArgument);
    assert.match(evenRes.status?.message ?? '', /StreamID must be odd/);
    assert.equal(odd!.streamId, 3);
    assert.equal(Response.decode(odd!.data).status?.code, RpcCode.OK);
    assert.equal(server.connectionCount, 1);
    await server.close();
  });

  it('answers a Request that does not decode InvalidArgument ("unmarshal request error")', async () => {
    const server = new TtrpcServer();
    const [a, b] = duplexPair();
    server.serve(a);
    const raw = rawReader(b);
    b.write(
      encodeFrame({ streamId: 5, type: MessageType.Request, flags: 0, data: Buffer.from([0x0a, 0x09]) }),
    );
    const [f] = await raw.next(1);
    const res = Response.decode(f!.data);
    assert.equal(res.status?.code, RpcCode.InvalidArgument);
    assert.match(res.status?.message ?? '', /unmarshal request error/);
    await server.close();
  });

  it('answers a response larger than a frame ResourceExhausted', async () => {
    const { client } = inMemory(
      taskStub({
        connect: async () => ({ shimPid: 1, taskPid: 1, version: 'x'.repeat(5 * 1024 * 1024) }),
      }),
    );
    assert.equal(
      await codeOf(client.call(TaskDefinition, 'connect', { id: 'c' })),
      RpcCode.ResourceExhausted,
    );
    client.close();
  });

  it('closes a connection on a response frame from the client, and aborts its calls in flight', async () => {
    let seen: CallContext | undefined;
    const logger = recordingLogger();
    const server = new TtrpcServer({ logger });
    server.register(
      TaskDefinition,
      taskStub({
        wait: (_r, ctx) => {
          seen = ctx;
          return new Promise(() => {});
        },
      }),
    );
    const [a, b] = duplexPair();
    server.serve(a);
    b.write(requestFrame(1, { method: 'Wait' }));
    await until('handler running', () => seen !== undefined);
    b.write(encodeFrame({ streamId: 1, type: MessageType.Response, flags: 0, data: new Uint8Array() }));
    await until('connection closed', () => server.connectionCount === 0);
    assert.equal(seen!.signal.aborted, true);
    assert.ok(logger.records.some((r) => r.level === 'warn' && /closing the connection/.test(r.msg)));
  });

  it('fails the calls in flight with VMC_ERR_TTRPC_CLOSED when the server goes away', async () => {
    const { server, client } = inMemory(taskStub({ wait: () => new Promise(() => {}) }));
    const p = client.call(TaskDefinition, 'wait', { id: 'c', execId: '' });
    await until('call in flight', () => server.connectionCount === 1 && client.inFlight === 1);
    await server.close();
    await assert.rejects(p, (e) => isVmcError(e, 'VMC_ERR_TTRPC_CLOSED'));
    await assert.rejects(client.call(TaskDefinition, 'connect', { id: 'c' }), (e) =>
      isVmcError(e, 'VMC_ERR_TTRPC_CLOSED'),
    );
  });

  it('client: VMC_ERR_TTRPC_TIMEOUT when nobody answers by the deadline plus grace, and no timer left', async () => {
    const clock = new ManualClock();
    const [, b] = duplexPair();
    const client = new TtrpcClient(b, { clock, graceMs: 10 });
    const p = client.call(TaskDefinition, 'connect', { id: 'c' }, { timeoutMs: 20 });
    const settled = assert.rejects(p, (e) => isVmcError(e, 'VMC_ERR_TTRPC_TIMEOUT'));
    await clock.advance(30);
    await settled;
    assert.equal(clock.pending, 0);
    client.close();
  });

  it('refuses to register a service twice', () => {
    const server = new TtrpcServer();
    server.register(TaskDefinition, {});
    assert.throws(() => server.register(TaskDefinition, {}), /already registered/);
  });
});

describe('ttrpc server on a Unix socket', () => {
  const dir = mkdtempSync('/tmp/vmc-ttrpc-');
  after(() => rmSync(dir, { recursive: true, force: true }));
  let n = 0;

  async function listening(logger?: Logger): Promise<{ server: TtrpcServer; path: string }> {
    const path = join(dir, `s${n++}.sock`);
    const server = new TtrpcServer({ logger });
    server.register(TaskDefinition, taskStub());
    await server.listen(path);
    return { server, path };
  }

  function closed(s: Socket): Promise<void> {
    return withDeadline('socket closed', 3000, () => new Promise<void>((r) => s.once('close', () => r())));
  }

  it('serves Connect to many connections at once', async () => {
    const { server, path } = await listening();
    const clients = await Promise.all(
      Array.from({ length: 5 }, async () => new TtrpcClient(await connectUnixSocket(path))),
    );
    const got = await Promise.all(clients.map((c, i) => c.call(TaskDefinition, 'connect', { id: `c${i}` })));
    assert.deepEqual(
      got.map((r) => r.version),
      ['c0|', 'c1|', 'c2|', 'c3|', 'c4|'],
    );
    assert.equal(server.connectionCount, 5);
    for (const c of clients) c.close();
    await until('all connections gone', () => server.connectionCount === 0);
    await server.close();
  });

  it('closes a connection that sends an oversized frame, logs it, and still answers another connection', async () => {
    const logger = recordingLogger();
    const { server, path } = await listening(logger);
    const good = new TtrpcClient(await connectUnixSocket(path));
    const bad = await connectUnixSocket(path);
    const gone = closed(bad);
    const header = Buffer.alloc(10);
    header.writeUInt32BE((4 << 20) + 1, 0);
    header.writeUInt32BE(1, 4);
    header[8] = MessageType.Request;
    bad.write(header);
    await gone;
    assert.ok(logger.records.some((r) => r.level === 'warn' && /exceeds the maximum/.test(r.msg)));
    const res = await good.call(TaskDefinition, 'connect', { id: 'still' });
    assert.equal(res.version, 'still|');
    await until('one connection left', () => server.connectionCount === 1);
    good.close();
    await server.close();
  });

  it('closes a connection that sends garbage (an HTTP request), the others go on', async () => {
    const logger = recordingLogger();
    const { server, path } = await listening(logger);
    const bad = await connectUnixSocket(path);
    const gone = closed(bad);
    bad.write('GET /v1/tasks HTTP/1.1\r\nHost: localhost\r\n\r\n');
    await gone;
    const client = new TtrpcClient(await connectUnixSocket(path));
    assert.equal((await client.call(TaskDefinition, 'connect', { id: 'ok' })).version, 'ok|');
    client.close();
    await until('no connection left', () => server.connectionCount === 0);
    await server.close();
  });

  it('a truncated frame then EOF: no hang, no call, the connection count is back to 0', async () => {
    let called = false;
    const path = join(dir, `s${n++}.sock`);
    const server = new TtrpcServer();
    server.register(TaskDefinition, {
      connect: async () => {
        called = true;
        return { shimPid: 0, taskPid: 0, version: '' };
      },
    });
    await server.listen(path);
    const s = await connectUnixSocket(path);
    const frame = requestFrame(1, { payload: Buffer.from([0x0a, 0x01, 0x61]) });
    s.end(frame.subarray(0, frame.length - 3));
    await closed(s);
    await until('no connection left', () => server.connectionCount === 0);
    assert.equal(called, false);
    await server.close();
  });

  it('refuses a second server on a live socket (VMC_ERR_CACHE_ENDPOINT_IN_USE)', async () => {
    const { server, path } = await listening();
    const second = new TtrpcServer();
    await assert.rejects(second.listen(path), (e) => isVmcError(e, 'VMC_ERR_CACHE_ENDPOINT_IN_USE'));
    await server.close();
    await second.close();
  });
});
