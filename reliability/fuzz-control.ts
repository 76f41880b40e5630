/**
 * Fuzz target 4: frames → a container shim's `ControlServer`, on a Unix socket in a temp directory, with a
 * trivial handler. Each case is one connection (a raw socket, or now and then the project's ControlClient)
 * carrying requests of every type with mutated fields, raw junk, truncated frames and oversized length
 * prefixes. Every frame the server decodes (or drops as not a frame) must get one reply, except the
 * per-process ones (stdin, close-stdin, signal); parseControlRequest and parseControlReply must return, never
 * throw; after each batch a good `ps` answers.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { isVmcError } from '../src/errors.js';
import { FrameDecoder } from '../src/protocol/agent/framing.js';
import { ControlClient } from '../src/protocol/control/client.js';
import {
  type ControlRequest,
  parseControlReply,
  parseControlRequest,
} from '../src/protocol/control/messages.js';
import { type ControlHandler, ControlServer } from '../src/protocol/control/server.js';

import {
  CaseFailure,
  describeError,
  type FuzzOptions,
  hostileString,
  hostileValue,
  mutated,
  PROBE_MS,
  PROTOTYPE_NAMES,
  someId,
  type Target,
} from './fuzz-common.js';
import { bytesOf, type Chunk, chunkOf, hasRaw } from './fuzz-frames.js';

const oneOf = <T>(...xs: T[]) => fc.constantFrom(...xs);
const anyOf = <T>(plausible: fc.Arbitrary<T>) =>
  fc.oneof(
    { weight: 3, arbitrary: plausible as fc.Arbitrary<unknown> },
    { weight: 1, arbitrary: hostileValue },
  );
const signal = anyOf(oneOf('SIGTERM', 'KILL', 'TERM; rm -rf /', 'SIGVERYVERYLONGNAME', ''));
const execProcess = mutated(
  fc.record({
    args: fc.oneof(fc.array(hostileString, { minLength: 1, maxLength: 3 }), fc.constant(['sh'])),
    env: fc.array(oneOf('A=1', 'x'), { maxLength: 2 }),
    cwd: anyOf(oneOf('/', 'rel', '/a/../b')),
    uid: someId,
    gid: someId,
    additionalGids: fc.array(someId, { maxLength: 3 }),
  }),
  ['args', 'env', 'cwd', 'uid', 'gid', 'additionalGids'],
);

/** The fields of each request type. */
const FIELDS: Record<string, Record<string, fc.Arbitrary<unknown>>> = {
  kill: { signal },
  signal: { signal },
  'signal-all': { name: anyOf(oneOf('c1', '../init.scope', 'a'.repeat(300))), signal },
  stdin: { data: anyOf(fc.base64String({ maxLength: 40 })) },
  exec: {
    pid: someId,
    process: execProcess,
    container: fc.option(
      mutated(
        fc.record({ root: oneOf('c1/rootfs', '/abs', '../x'), join: someId }, { requiredKeys: ['root'] }),
        ['root', 'join', 'mounts', 'cgroup'],
      ),
      { nil: undefined },
    ),
    shareSandbox: fc.option(
      fc.array(oneOf('ipc', 'uts', 'pid', 'net', ...PROTOTYPE_NAMES), { maxLength: 3 }),
      { nil: undefined },
    ),
  },
};
const TYPES = [
  'start',
  'kill',
  'pause',
  'resume',
  'ps',
  'signal-all',
  'exec',
  'stdin',
  'close-stdin',
  'signal',
];

/** A well-formed exec, as `vmcache exec` sends it: two on a connection, or one and a hang-up, matter. */
const GOOD_EXEC = {
  t: 'exec',
  pid: 1,
  process: { args: ['sh'], env: [], cwd: '/', uid: 0, gid: 0, additionalGids: [] },
};

/** A request of any type (or an unknown one), fields mutated. */
const request: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 1, arbitrary: fc.constant(GOOD_EXEC) },
  {
    weight: 8,
    arbitrary: fc
      .oneof(
        { weight: 6, arbitrary: oneOf(...TYPES) },
        { weight: 1, arbitrary: fc.oneof(hostileString, oneOf(...PROTOTYPE_NAMES)) },
      )
      .chain((t) => {
        const fields = FIELDS[t as string] ?? {};
        return mutated(fc.record({ t: fc.constant(t as unknown), ...fields }), ['t', ...Object.keys(fields)]);
      }),
  },
  { weight: 1, arbitrary: hostileValue },
);

/** Requests answered only through their exec session, never with a reply of their own. */
const SESSION_ONLY = new Set(['stdin', 'close-stdin', 'signal']);

/** How many replies the server owes for `bytes` (decoded with the same decoder), and the parse problems. */
function owedReplies(bytes: Buffer): { owed: number; problem: string | null } {
  let owed = 0;
  for (const f of new FrameDecoder().push(bytes)) {
    if (!f.ok) {
      owed++; // refused as not a frame
      continue;
    }
    let parsed: ReturnType<typeof parseControlRequest>;
    try {
      parsed = parseControlRequest(f.value);
      parseControlReply(f.value);
    } catch (e) {
      return { owed, problem: `parseControlRequest/Reply threw ${describeError(e)}` };
    }
    if (!parsed.ok && parsed.error.length > 2_000)
      return { owed, problem: `an error of ${parsed.error.length} chars` };
    if (!(parsed.ok && SESSION_ONLY.has(parsed.req.t))) owed++;
  }
  return { owed, problem: null };
}

/** A case: the chunks of one connection (read to the end, or hung up at once), or one request by ControlClient. */
export type ControlCase =
  | { via: 'socket'; chunks: Chunk[]; hangUp: boolean }
  | { via: 'client'; req: unknown };

/** Target 4: a ControlServer whose handler touches nothing. */
export async function controlTarget(_opts: FuzzOptions): Promise<Target<ControlCase>> {
  const dir = mkdtempSync(join(tmpdir(), 'vmc-fz-ctl-'));
  const path = join(dir, 'ctl', 'c.sock');
  /** Exec sessions not yet abandoned, and execs still starting: both 0 once their connection is gone. */
  let sessions = 0;
  let starting = 0;
  const handler: ControlHandler = async (req, reply) => {
    if (req.t === 'ps') {
      reply({ t: 'ok', result: [] });
      return 'replied';
    }
    if (req.t !== 'exec') return undefined;
    // Starting a process takes a moment (an agent round trip): a client may leave meanwhile.
    starting++;
    await new Promise((r) => setTimeout(r, 1));
    starting--;
    sessions++;
    reply({ t: 'ok', result: { pid: 1 } });
    return {
      write: async () => {},
      end: async () => {},
      kill: async () => {},
      resize: async () => {},
      abandon: () => void sessions--,
    };
  };
  const server = await ControlServer.listen(path, handler);
  const ps = async () => {
    const c = await ControlClient.connect(path, 'fuzz');
    try {
      return await c.request<unknown[]>({ t: 'ps' });
    } finally {
      c.close();
    }
  };

  async function viaClient(req: unknown): Promise<'accepted' | 'refused'> {
    const client = await ControlClient.connect(path, 'fuzz');
    try {
      const parsed = parseControlRequest(req);
      if (parsed.ok && SESSION_ONLY.has(parsed.req.t)) {
        client.send(parsed.req); // answered by no reply (its exec session takes it)
        return 'accepted';
      }
      await client.request(req as ControlRequest);
      return 'accepted';
    } catch (e) {
      if (isVmcError(e)) return 'refused'; // including VMC_ERR_AGENT_FRAME_TOO_LARGE: too big to send
      throw e;
    } finally {
      client.close();
    }
  }

  async function viaSocket(chunks: Chunk[], hangUp: boolean): Promise<'accepted' | 'refused'> {
    const bytes = Buffer.concat(chunks.map(bytesOf));
    const { owed, problem } = owedReplies(bytes);
    if (problem) throw new CaseFailure('crash', problem);
    const replies: Array<{ t?: unknown; message?: unknown }> = [];
    const sock = connect(path);
    sock.on('error', () => {});
    const decoder = new FrameDecoder();
    sock.on('data', (b: Buffer) => {
      for (const f of decoder.push(b))
        replies.push(f.ok ? (f.value as { t?: unknown }) : { t: 'not a frame' });
    });
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    sock.write(bytes);
    if (hangUp) {
      sock.destroy();
      // The server reads what was sent after the hang-up; its execs must be seen as part of this case.
      await new Promise((r) => setTimeout(r, 20));
      return 'refused';
    }
    const t0 = performance.now();
    while (replies.length < owed && performance.now() - t0 < PROBE_MS)
      await new Promise((r) => setTimeout(r, 1));
    sock.destroy();
    if (replies.length < owed)
      throw new CaseFailure(
        'violation',
        `${replies.length} replies to ${owed} requests within ${PROBE_MS} ms`,
      );
    for (const r of replies) {
      const ok = parseControlReply(r);
      if (!ok || (ok.t === 'error' && (!ok.code || !ok.message || ok.message.length > 2_000)))
        throw new CaseFailure('violation', `unclear reply ${JSON.stringify(r).slice(0, 200)}`);
    }
    return replies.every((r) => r.t === 'ok') && owed > 0 ? 'accepted' : 'refused';
  }

  return {
    arbitrary: fc.oneof(
      {
        weight: 5,
        arbitrary: fc.record({
          via: fc.constant('socket' as const),
          chunks: fc.array(chunkOf(request), { minLength: 1, maxLength: 5 }),
          hangUp: fc.nat(4).map((n) => n === 0), // leaves without waiting for the replies
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({ via: fc.constant('client' as const), req: request.filter((r) => !hasRaw(r)) }),
      },
    ),
    async run(c) {
      const before = sessions; // counted per case, so that one leak is not blamed on every case after it
      const verdict = c.via === 'client' ? await viaClient(c.req) : await viaSocket(c.chunks, c.hangUp);
      // Whatever the connection carried, once it is gone no exec session may be left (its process orphaned).
      for (let i = 0; i < 50 && (sessions > before || starting > 0); i++)
        await new Promise((r) => setTimeout(r, 2));
      if (sessions > before)
        throw new CaseFailure('violation', `${sessions - before} exec sessions outlived their connection`);
      return verdict;
    },
    async probe() {
      const t0 = performance.now();
      const r = await ps();
      if (!Array.isArray(r) || performance.now() - t0 > PROBE_MS) throw new Error('ps did not answer in 1 s');
    },
    async finish() {
      await new Promise((r) => setTimeout(r, 50)); // the last connections' close events
      const left = readdirSync(join(dir, 'ctl'));
      const out: string[] = [];
      if (sessions !== 0 || starting !== 0) out.push(`${sessions + starting} exec sessions never abandoned`);
      if (left.join() !== 'c.sock') out.push(`left in the socket directory: ${left.join(', ')}`);
      return out;
    },
    async close() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
