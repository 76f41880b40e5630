import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { status as Code, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import type { BaseVmRequest, FactoryBase } from '../../../src/factory/base.js';
import { decodeVm, ERROR_CODE_METADATA, SHAPE_METADATA } from '../../../src/factory/cache-wire.js';
import type { PoolEntry } from '../../../src/factory/pool-set.js';
import { RemoteCacheFactory } from '../../../src/factory/remote-cache.js';
import { systemClock } from '../../../src/platform/clock.js';
import { runCommand } from '../../../src/platform/command.js';
import { nullLogger } from '../../../src/platform/logger.js';
import {
  CacheServiceClient,
  type GrpcStatus,
  type GrpcVM,
} from '../../../src/protocol/cache/generated/cache.js';
import { CacheServer } from '../../../src/server/cache-server.js';
import { PromMetrics } from '../../../src/server/metrics.js';
import type { VmRecord } from '../../../src/vm/record.js';
import type { Vm } from '../../../src/vm/vm.js';
import { type InstantVmCounts, instantPools, instantVms } from '../../helpers/instant-vms.js';

/** Socket paths must stay under 107 bytes: a short directory under the system temp directory. */
const dir = mkdtempSync(join(tmpdir(), 'vmc-sh-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const deps = {
  paths: { runDir: dir, imageDir: '/img', cacheDir: dir },
  clock: systemClock,
  logger: nullLogger,
  run: runCommand,
};

const SMALL = { cpus: 1, memoryMiB: 512 }; // the built-in shape: the default pool's
const BIG = { cpus: 2, memoryMiB: 1024 };

/**
 * A server on its own socket in front of `pools` (the first the default), with its metrics; `stop` ends it.
 * `seen` records the shape each GetBaseVM reached the pool set with (undefined: the request named none).
 */
async function serve(pools: Array<Omit<PoolEntry, 'kind'>>) {
  const metrics = new PromMetrics();
  const set = instantPools(pools, 2, metrics);
  const seen: Array<BaseVmRequest['shape']> = [];
  const getBaseVM = set.getBaseVM.bind(set);
  set.getBaseVM = (signal, want) => {
    seen.push(want?.shape);
    return getBaseVM(signal, want);
  };
  const endpoint = join(dir, `s${++n}.sock`);
  const server = new CacheServer(
    set,
    { endpoint, leaseTimeoutMs: 60_000, agentDialTimeoutMs: 1_000, metricsEndpoint: '' },
    deps,
    metrics,
  );
  await server.start();
  const client = new CacheServiceClient(`unix://${endpoint}`, credentials.createInsecure());
  const deadline = () => ({ deadline: Date.now() + 5_000 });
  return {
    set,
    metrics,
    seen,
    endpoint,
    /** A raw GetBaseVM with `md` (as Kata's client when it is empty). */
    get(md: Record<string, string | string[]> = {}): Promise<GrpcVM> {
      const m = new Metadata();
      for (const [k, v] of Object.entries(md)) for (const x of [v].flat()) m.add(k, x);
      return new Promise((resolve, reject) =>
        client.getBaseVm({}, m, deadline(), (e, r) => (e ? reject(e) : resolve(r!))),
      );
    },
    status(): Promise<GrpcStatus> {
      return new Promise((resolve, reject) =>
        client.status({}, new Metadata(), deadline(), (e, r) => (e ? reject(e) : resolve(r!))),
      );
    },
    /** Each pool's name, ready VMs, hits and misses, from the pool set itself. */
    counters() {
      return set.status().pools.map((p) => ({
        name: p.name,
        ready: p.status.idle.length,
        hits: p.status.hits,
        misses: p.status.misses,
      }));
    },
    async stop() {
      client.close();
      await server.stop();
    },
  };
}

/** Two pools of instant VMs: `default` (1 vCPU, 512 MiB) and `big` (2 vCPUs, 1024 MiB), `size` each. */
function twoPools(size: number, counts?: InstantVmCounts) {
  return [
    { name: 'default', base: instantVms(dir, counts, SMALL), min: size, max: size },
    { name: 'big', base: instantVms(dir, counts, BIG), min: size, max: size },
  ];
}

const shapeOf = (g: GrpcVM) => {
  const { spec } = decodeVm(g).record;
  return { cpu: g.cpu, memory: g.memory, spec: { cpus: spec.cpus, memoryMiB: spec.memoryMiB } };
};

/**
 * `base` with a gate: while it is shut, boots wait (until it opens, or the pool aborts them at close), so a
 * pool empties and stays empty while the test makes its misses.
 */
function gated(base: FactoryBase) {
  let shut = false;
  const waiting: Array<() => void> = [];
  return {
    base: {
      ...base,
      getBaseVM: async (signal?: AbortSignal) => {
        while (shut)
          await new Promise<void>((resolve, reject) => {
            waiting.push(resolve);
            signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
          });
        return base.getBaseVM(signal);
      },
    } satisfies FactoryBase,
    shut: () => {
      shut = true;
    },
    open: () => {
      shut = false;
      for (const go of waiting.splice(0)) go();
    },
  };
}

/** Resolves once `cond` holds (checked every 5 ms), or fails after 5 s. */
async function until(cond: () => boolean): Promise<void> {
  for (const t0 = Date.now(); !cond(); await new Promise((r) => setTimeout(r, 5)))
    assert.ok(Date.now() - t0 < 5_000, 'condition not met within 5 s');
}

async function metricsText(m: PromMetrics): Promise<string> {
  return m.registry.metrics();
}

describe('GetBaseVM vmcache-shape (a server of two pools)', () => {
  it("serves a named shape from that shape's pool, and a request without one from the default pool", async () => {
    const s = await serve(twoPools(2));
    try {
      await s.set.waitReady(undefined, 5_000);
      const big = await s.get({ [SHAPE_METADATA]: '2x1024' });
      assert.deepEqual(shapeOf(big), { cpu: 2, memory: 1024, spec: BIG });
      const none = await s.get();
      assert.deepEqual(shapeOf(none), { cpu: 1, memory: 512, spec: SMALL });
      const small = await s.get({ [SHAPE_METADATA]: '1x512' });
      assert.deepEqual(shapeOf(small), { cpu: 1, memory: 512, spec: SMALL });
      assert.deepEqual(s.seen, [BIG, undefined, SMALL], 'the shape as the server parsed it');
      assert.deepEqual(
        s.counters().map((p) => [p.name, p.hits, p.misses]),
        [
          ['default', 2, 0],
          ['big', 1, 0],
        ],
      );
    } finally {
      await s.stop();
    }
  });

  it('refuses a malformed vmcache-shape with INVALID_ARGUMENT naming the key, and takes no VM', async () => {
    const counts: InstantVmCounts = { handed: 0, stopped: 0 };
    const s = await serve(twoPools(2, counts));
    try {
      await s.set.waitReady(undefined, 5_000);
      const before = s.counters();
      assert.deepEqual(
        before.map((p) => p.ready),
        [2, 2],
      );
      for (const bad of ['abc', '0x1', ['2x1024', '1x512'], '2X1024', '1025x1', '1x16777217']) {
        await assert.rejects(s.get({ [SHAPE_METADATA]: bad }), (e: ServiceError) => {
          assert.equal(e.code, Code.INVALID_ARGUMENT, `${JSON.stringify(bad)}: ${e.details}`);
          assert.equal(e.metadata.get(ERROR_CODE_METADATA)[0], 'VMC_ERR_CACHE_PROTOCOL');
          assert.match(e.details, /metadata vmcache-shape must be <vCPUs>x<MiB>/);
          return true;
        });
      }
      // grpc-js joins a repeated header into one value: refused as that value.
      await assert.rejects(s.get({ [SHAPE_METADATA]: ['2x1024', '2x1024'] }), (e: ServiceError) =>
        /got "2x1024, 2x1024"/.test(e.details),
      );
      assert.deepEqual(s.counters(), before, "no pool's ready VMs, hits or misses moved");
      assert.equal(counts.handed, 0, 'no VM handed over');
      assert.deepEqual(s.seen, [], 'no request reached the pools');
      assert.doesNotMatch(await metricsText(s.metrics), /vmcache_routes_total\{kind="[a-z]+"\} [1-9]/);
    } finally {
      await s.stop();
    }
  });

  it('Status lists every pool with its shape, sizing and counters; the top-level counters sum them', async () => {
    const small = gated(instantVms(dir, undefined, SMALL));
    const big = gated(instantVms(dir, undefined, BIG));
    const s = await serve([
      { name: 'default', base: small.base, min: 1, max: 1 },
      { name: 'big', base: big.base, min: 1, max: 1 },
      // Never asked for: its sizer keeps it at its min.
      { name: 'huge', base: instantVms(dir, undefined, { cpus: 4, memoryMiB: 2048 }), min: 0, max: 3 },
    ]);
    try {
      await s.set.waitReady(undefined, 5_000);
      small.shut();
      big.shut();
      // One hit on each pool; their refills then wait at the gate, so both pools stay empty...
      assert.deepEqual(shapeOf(await s.get({ [SHAPE_METADATA]: '2x1024' })).spec, BIG);
      assert.deepEqual(shapeOf(await s.get()).spec, SMALL);
      // ...and a miss on each under `fail`, and a `cold` one on `big` (its boot waits at the gate too).
      const miss = (e: ServiceError) => e.code === Code.RESOURCE_EXHAUSTED;
      await assert.rejects(s.get({ 'vmcache-miss-policy': 'fail' }), miss);
      await assert.rejects(s.get({ 'vmcache-miss-policy': 'fail', [SHAPE_METADATA]: '2x1024' }), miss);
      const cold = s.get({ 'vmcache-miss-policy': 'cold', [SHAPE_METADATA]: '2x1024' });
      await until(() => s.set.status().coldBooting === 1); // reached the server: it waits at the gate
      small.open();
      big.open();
      assert.deepEqual(shapeOf(await cold).spec, BIG, 'the cold boot is of the shape asked for');
      await s.set.waitReady(undefined, 5_000);

      const st = await s.status();
      assert.deepEqual(
        st.pools.map((p) => ({
          name: p.name,
          cpu: p.cpu,
          memory: p.memory,
          base: p.base,
          ready: p.ready,
          target: p.target,
          min: p.min,
          max: p.max,
          hits: Number(p.hits),
          misses: [Number(p.missesWait), Number(p.missesFail), Number(p.missesCold)],
        })),
        [
          {
            name: 'default',
            ...{ cpu: 1, memory: 512, base: 'direct', ready: 1, target: 1, min: 1, max: 1 },
            ...{ hits: 1, misses: [0, 1, 0] },
          },
          {
            name: 'big',
            ...{ cpu: 2, memory: 1024, base: 'direct', ready: 1, target: 1, min: 1, max: 1 },
            ...{ hits: 1, misses: [0, 1, 1] },
          },
          {
            name: 'huge',
            ...{ cpu: 4, memory: 2048, base: 'direct', ready: 0, target: 0, min: 0, max: 3 },
            ...{ hits: 0, misses: [0, 0, 0] },
          },
        ],
      );
      assert.deepEqual(
        st.pools.map((p) => p.targetReason),
        ['fixed', 'fixed', 'initial'],
      );
      assert.equal(Number(st.hits), 2);
      assert.deepEqual([Number(st.missesWait), Number(st.missesFail), Number(st.missesCold)], [0, 2, 1]);
      assert.equal(st.target, 2);
      assert.equal(st.vmstatus.length, 2, 'the idle VMs of every pool');
    } finally {
      await s.stop();
    }
  });

  it('exports hits per pool (label pool) and the routes taken (label kind)', async () => {
    const s = await serve(twoPools(2));
    try {
      await s.set.waitReady(undefined, 5_000);
      await s.get({ [SHAPE_METADATA]: '2x1024' });
      await s.get({ [SHAPE_METADATA]: '2x1024' });
      await s.get();
      const text = await metricsText(s.metrics);
      assert.match(text, /^vmcache_hits_total\{pool="default"\} 1$/m);
      assert.match(text, /^vmcache_hits_total\{pool="big"\} 2$/m);
      assert.match(text, /^vmcache_routes_total\{kind="exact"\} 3$/m);
      assert.match(text, /^vmcache_routes_total\{kind="miss"\} 0$/m);
      assert.match(text, /^vmcache_pool_target\{pool="big"\} 2$/m);
    } finally {
      await s.stop();
    }
  });
});

/** A stand-in for a VM a client adopted: its agent answers after resume at once. */
function adopted(record: VmRecord): Vm {
  return {
    id: record.id,
    record,
    resume: async () => {},
    pause: async () => {},
    destroy: async () => {},
  } as unknown as Vm;
}

describe('RemoteCacheFactory sends vmcache-shape', () => {
  it("asks for a shape other than the server's default pool's, and names none for the default shape", async () => {
    const s = await serve(twoPools(2));
    try {
      await s.set.waitReady(undefined, 5_000);
      const remote = await RemoteCacheFactory.connect(s.endpoint, deps, {
        readyTimeoutMs: 1_000,
        attach: async (record) => adopted(record),
      });
      try {
        assert.deepEqual(
          { cpus: remote.config().cpus, memoryMiB: remote.config().memoryMiB },
          SMALL,
          "the server's Config is its default pool's",
        );
        const big = await remote.getBaseVM(undefined, { shape: BIG });
        assert.equal(big.record.spec.cpus, 2);
        assert.equal(big.record.spec.memoryMiB, 1024);
        const small = await remote.getBaseVM(undefined, { shape: SMALL });
        assert.equal(small.record.spec.memoryMiB, 512);
        const none = await remote.getBaseVM();
        assert.equal(none.record.spec.memoryMiB, 512);
        assert.deepEqual(s.seen, [BIG, undefined, undefined], 'no vmcache-shape for the default shape');
        assert.deepEqual(
          s.counters().map((p) => [p.name, p.hits]),
          [
            ['default', 2],
            ['big', 1],
          ],
        );
      } finally {
        await remote.close();
      }
    } finally {
      await s.stop();
    }
  });
});
