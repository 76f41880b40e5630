/**
 * Fuzz target 3a: frames → the guest agent's engine (`AgentServer`), run in-process with fake guest operations
 * over in-memory connections. Each case is one connection carrying a sequence of chunks: requests of every op
 * with mutated fields (encoded with `encodeFrame`), raw garbage, truncated frames, oversized length prefixes.
 * Every request with an id must get one well-formed reply (a result or an error with a code and a short
 * message), nothing may escape, no process may be started; after each batch, a fresh connection's handshake
 * and ping answer.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { AgentServer, type GuestOps } from '../src/guest/agent/server.js';
import { AgentClient } from '../src/protocol/agent/client.js';
import { encodeFrame, FrameDecoder } from '../src/protocol/agent/framing.js';
import { type AgentOp, parseGuestMessage } from '../src/protocol/agent/messages.js';
import { duplexPair } from '../test/helpers/duplex-pair.js';
import {
  CaseFailure,
  type FuzzOptions,
  hostileString,
  hostileValue,
  mutated,
  PROBE_MS,
  PROTOTYPE_NAMES,
  someId,
  type Target,
} from './fuzz-common.js';
import { bytesOf, type Chunk, chunkOf } from './fuzz-frames.js';

const oneOf = <T>(...xs: T[]) => fc.constantFrom(...xs);
const anyOf = <T>(plausible: fc.Arbitrary<T>) =>
  fc.oneof(
    { weight: 3, arbitrary: plausible as fc.Arbitrary<unknown> },
    { weight: 1, arbitrary: hostileValue },
  );
const path = oneOf('/x', '/proc', '/a/../b', 'rel', '/a\u001fb', '/');
const relPath = oneOf('c1/rootfs', 'c1', '/abs', '../x', 'a/../../x', '', 'a\u001eb');
const signal = anyOf(oneOf('TERM', 'SIGKILL', 'sigterm', 'SIGNOPE', 'SIG', ...PROTOTYPE_NAMES));
const ids = fc.array(someId, { maxLength: 4 });

/** `exec.container`: every field the guest helper takes, plausible or not. */
const container = mutated(
  fc.record(
    {
      root: relPath,
      join: someId,
      hostname: anyOf(oneOf('h', 'a'.repeat(65))),
      readonly: fc.boolean(),
      additionalGids: fc.oneof(ids, fc.constant(Array(65).fill(1))),
      mounts: fc.array(
        mutated(
          fc.record({
            type: oneOf('bind', 'proc', 'tmpfs', 'nfs', 'constructor'),
            source: relPath,
            target: path,
            flags: someId,
            data: oneOf('', 'mode=755', '\u001f'),
          }),
          ['type', 'source', 'target', 'flags', 'data'],
        ),
        { maxLength: 3 },
      ),
      cgroup: mutated(
        fc.record({
          name: anyOf(oneOf('c1', '.hidden', '../x', 'a'.repeat(201))),
          limits: fc.dictionary(
            fc.oneof(oneOf('memory.max', 'cpu.max', 'pids.max', ...PROTOTYPE_NAMES), hostileString),
            anyOf(oneOf('max', '100000 100000', 'MAX', '1\n')),
            { maxKeys: 3 },
          ),
        }),
        ['name', 'limits'],
      ),
      maskedPaths: fc.array(path, { maxLength: 3 }),
      readonlyPaths: fc.array(path, { maxLength: 3 }),
      sysctl: fc.dictionary(
        fc.oneof(oneOf('net.ipv4.ip_forward', 'kernel.shmmax'), hostileString),
        anyOf(oneOf('1', 'a\nb')),
        { maxKeys: 3 },
      ),
      propagation: someId,
      rlimits: fc.array(fc.record({ resource: someId, soft: anyOf(fc.constant(null)), hard: someId }), {
        maxLength: 3,
      }),
      oomScoreAdj: anyOf(fc.integer({ min: -1001, max: 1001 })),
      shareNamespaces: mutated(
        fc.record({
          pid: someId,
          kinds: fc.array(oneOf('ipc', 'uts', 'pid', 'net', 'constructor'), { maxLength: 3 }),
        }),
        ['pid', 'kinds'],
      ),
      startHooks: fc.array(
        mutated(
          fc.record({
            path,
            args: fc.array(fc.string(), { maxLength: 2 }),
            env: fc.constant([]),
            timeout: someId,
          }),
          ['path', 'args', 'env', 'timeout'],
        ),
        { maxLength: 2 },
      ),
      hookState: hostileString,
    },
    { requiredKeys: ['root'] },
  ),
  ['root', 'mounts', 'cgroup', 'sysctl', 'rlimits', 'startHooks', 'join'],
);

/** The fields of each op, plausible or not. */
const FIELDS: Record<string, Record<string, fc.Arbitrary<unknown>>> = {
  exec: {
    exec: mutated(
      fc.record(
        {
          args: fc.oneof(fc.array(hostileString, { minLength: 1, maxLength: 3 }), fc.constant(['prog'])),
          env: fc.array(oneOf('A=1', 'PATH=/x', '=x', 'noeq', '__proto__=1', 'constructor=x'), {
            maxLength: 3,
          }),
          cwd: anyOf(oneOf('/', '/nonexistent', 'rel')),
          uid: someId,
          gid: someId,
          stdin: anyOf(fc.boolean()),
          container,
          terminal: anyOf(fc.record({ rows: someId, cols: someId })),
        },
        { requiredKeys: ['args'] },
      ),
      ['args', 'env', 'cwd', 'uid', 'container'],
    ),
  },
  stdin: { proc: someId, data: anyOf(fc.base64String({ maxLength: 40 })) },
  'close-stdin': { proc: someId },
  'proc-status': { proc: someId },
  signal: { proc: someId, signal },
  resize: { proc: someId, rows: someId, cols: someId },
  'update-cgroup': {
    name: anyOf(oneOf('c1', '.x', '../init.scope')),
    limits: anyOf(
      fc.dictionary(
        oneOf('memory.max', 'cpu.max', 'pids.max', 'cgroup.procs', '__proto__'),
        oneOf('max', '100000 100000', '1; rm', ''),
      ),
    ),
  },
  'cgroup-stats': { name: anyOf(oneOf('c1', '.x', '../init.scope', 'a'.repeat(201))) },
  'signal-cgroup': { name: anyOf(oneOf('c1', '.x', '../init.scope', 'a'.repeat(201))), signal },
  reseed: { data: anyOf(oneOf('00', 'ab'.repeat(512), 'ab'.repeat(513), 'AB', '0')) },
  'set-time': { epochNs: anyOf(oneOf('0', '1700000000000000000', '1'.repeat(21), '-1')) },
  online: { cpus: someId, memory: anyOf(fc.boolean()) },
  net: {
    nic: mutated(
      fc.record({
        mac: anyOf(oneOf('02:00:00:00:00:01', '02:00:00:00:00:0G', '02-00-00-00-00-01')),
        mtu: anyOf(oneOf(68, 1500, 65535, 67, 65536)),
        addresses: fc.array(anyOf(oneOf('10.0.0.2/24', 'fe80::1/64', '10.0.0.2', '1/999')), { maxLength: 2 }),
        routes: fc.array(
          mutated(fc.record({ dest: oneOf('default', '10.0.0.0/8', 'x'), via: oneOf('10.0.0.1', 'x y') }), [
            'dest',
            'via',
          ]),
          { maxLength: 2 },
        ),
      }),
      ['mac', 'mtu', 'addresses', 'routes'],
    ),
  },
  warm: { share: anyOf(fc.boolean()) },
  churn: { passes: anyOf(fc.integer({ min: -1, max: 201 })) },
};

/** Every op of the protocol (AgentRequest's), checked against the type: a new op fails to compile here. */
const OPS = Object.keys({
  ping: 0,
  exec: 0,
  stdin: 0,
  'close-stdin': 0,
  signal: 0,
  resize: 0,
  'update-cgroup': 0,
  'cgroup-stats': 0,
  'proc-status': 0,
  'signal-cgroup': 0,
  reseed: 0,
  'set-time': 0,
  online: 0,
  'mount-shared': 0,
  sync: 0,
  net: 0,
  warm: 0,
  churn: 0,
  info: 0,
  shutdown: 0,
} satisfies Record<AgentOp, 0>);

/** A host → guest message: a hello, a request of any op (or an unknown one), fields mutated. */
export const hostMessage: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 1,
    arbitrary: mutated(
      fc.record({ t: fc.constant('hello'), nonce: anyOf(oneOf('n1', 'n'.repeat(129))), version: someId }),
      ['t', 'nonce', 'version'],
    ),
  },
  {
    weight: 8,
    arbitrary: fc
      .oneof(
        { weight: 6, arbitrary: oneOf(...OPS) },
        { weight: 1, arbitrary: fc.oneof(hostileString, oneOf(...PROTOTYPE_NAMES)) },
      )
      .chain((op) => {
        const fields = FIELDS[op as string] ?? {};
        return mutated(
          fc.record({ t: fc.constant('req'), id: someId, op: fc.constant(op as unknown), ...fields }),
          ['t', 'id', 'op', ...Object.keys(fields)],
        );
      }),
  },
  { weight: 1, arbitrary: hostileValue },
);

const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Points every program a request could run at a directory that does not exist (nothing may be started). */
function defang(msg: unknown, absent: string): unknown {
  if (!isObj(msg) || !isObj(msg.exec) || !Array.isArray(msg.exec.args)) return msg;
  const args = [...msg.exec.args];
  if (typeof args[0] === 'string') args[0] = `${absent}/${args[0]}`;
  return { ...msg, exec: { ...msg.exec, args } };
}

/** Guest operations that touch nothing; a container "command" is a program that does not exist. */
function fakeOps(absent: string): GuestOps {
  return {
    reseed: async () => {},
    setTime: async () => {},
    online: async () => ({ cpus: 1, memoryBlocks: 0 }),
    mountShared: async () => ({ path: `${absent}/shared` }),
    syncShared: async () => {},
    containerCommand: async () => ({ file: `${absent}/vmc-helper`, args: ['enter'] }),
    signalCgroup: async () => 0,
    updateCgroup: async () => false,
    cgroupStats: async () => null,
    waitForNic: async () => 'eth0',
    spareNic: async () => 'eth0',
    configureNic: async () => {},
    warm: async () => {},
    churn: async () => {},
    info: async () => ({ kernel: 'fuzz' }),
    shutdown: async () => {},
  };
}

/** A fresh connection's handshake and ping answer within PROBE_MS. */
export async function probeAgent(server: AgentServer): Promise<void> {
  const [host, guest] = duplexPair();
  const served = server.serve(guest);
  const client = new AgentClient(host, { requestTimeoutMs: PROBE_MS });
  try {
    const t0 = performance.now();
    await client.handshake(PROBE_MS, 100);
    const pong = await client.request<{ pong?: boolean }>({ op: 'ping' }, PROBE_MS);
    if (pong?.pong !== true) throw new Error(`ping answered ${JSON.stringify(pong)}`);
    if (performance.now() - t0 > PROBE_MS) throw new Error('handshake and ping took over 1 s');
  } finally {
    client.close();
    await served;
  }
}

/**
 * Longest error message a reply may carry: it names the field and never echoes the request whole. The longest
 * legitimate one quotes a program path twice (the agent's `cannot run` and Node's `spawn … ENOENT`), and a path
 * is at most PATH_MAX (4096 bytes; a longer one fails with a short ENAMETOOLONG).
 */
const MAX_MESSAGE = 16 * 1024;

/** A case: whether the connection starts with a good hello, then its chunks. */
export interface AgentCase {
  hello: boolean;
  chunks: Chunk[];
}

/** Target 3a: one AgentServer; a connection per case. */
export async function agentServerTarget(_opts: FuzzOptions): Promise<Target<AgentCase>> {
  const dir = mkdtempSync(join(tmpdir(), 'vmc-fz-agent-'));
  const absent = join(dir, 'absent');
  const server = new AgentServer(fakeOps(absent));
  return {
    arbitrary: fc.record({
      hello: fc.boolean(),
      chunks: fc.array(chunkOf(hostMessage), { minLength: 1, maxLength: 6 }),
    }),
    async run(c) {
      const chunks = c.chunks.map((k) => ('msg' in k ? { ...k, msg: defang(k.msg, absent) } : k));
      const bytes = [
        ...(c.hello ? [encodeFrame({ t: 'hello', nonce: 'fuzz', version: 1 })] : []),
        ...chunks.map(bytesOf),
      ];
      // What the agent will decode (the same decoder), hence which requests it owes a reply.
      const owed = new Map<number, number>();
      for (const f of new FrameDecoder().push(Buffer.concat(bytes)))
        if (f.ok && isObj(f.value) && f.value.t === 'req' && isId(f.value.id))
          owed.set(f.value.id, (owed.get(f.value.id) ?? 0) + 1);
      const [host, guest] = duplexPair();
      const served = server.serve(guest);
      const replies = new Map<number, number>();
      let errors = 0;
      let bad: string | null = null;
      const decoder = new FrameDecoder();
      host.on('data', (chunk: Buffer) => {
        for (const f of decoder.push(chunk)) {
          const m = f.ok ? parseGuestMessage(f.value) : null;
          if (!m?.ok) {
            bad ??= `the agent sent an invalid frame: ${f.ok ? JSON.stringify(f.value).slice(0, 200) : f.reason}`;
            continue;
          }
          if (m.msg.t !== 'res') continue;
          replies.set(m.msg.id, (replies.get(m.msg.id) ?? 0) + 1);
          if (!m.msg.ok) errors++;
          if (
            !m.msg.ok &&
            (!m.msg.error.code || !m.msg.error.message || m.msg.error.message.length > MAX_MESSAGE)
          )
            bad ??= `unclear error reply (${String(m.msg.error.message).length} chars): ${JSON.stringify(m.msg.error).slice(0, 300)}`;
        }
      });
      for (const b of bytes) host.write(b);
      const answered = () => [...owed].every(([id, n]) => (replies.get(id) ?? 0) >= n);
      const t0 = performance.now();
      while (!answered() && performance.now() - t0 < PROBE_MS) await new Promise((r) => setTimeout(r, 1));
      host.destroy();
      await served;
      if (bad) throw new CaseFailure('violation', bad);
      if (!answered()) {
        const missing = [...owed].filter(([id, n]) => (replies.get(id) ?? 0) < n).map(([id]) => id);
        throw new CaseFailure(
          'violation',
          `no reply to request ${missing.slice(0, 5).join(', ')} within ${PROBE_MS} ms`,
        );
      }
      if (server.running !== 0) throw new CaseFailure('violation', `${server.running} processes started`);
      // Accepted: every request was served. Refused: an error reply, or frames dropped as not frames.
      const dropped = new FrameDecoder().push(Buffer.concat(bytes)).some((f) => !f.ok);
      return owed.size > 0 && errors === 0 && !dropped ? 'accepted' : 'refused';
    },
    probe: () => probeAgent(server),
    async finish() {
      return server.running ? [`${server.running} processes left running`] : [];
    },
    async close() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
