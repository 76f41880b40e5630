import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { status as Code, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { connectCache } from '../../../src/api.js';
import type { MissPolicy } from '../../../src/config/schema.js';
import { isVmcError } from '../../../src/errors.js';
import type { FactoryBase } from '../../../src/factory/base.js';
import {
  ERROR_CODE_METADATA,
  LEASE_METADATA,
  MISS_POLICY_METADATA,
  UNREADY_METADATA,
} from '../../../src/factory/cache-wire.js';
import { RemoteCacheFactory } from '../../../src/factory/remote-cache.js';
import { systemClock } from '../../../src/platform/clock.js';
import { runCommand } from '../../../src/platform/command.js';
import { nullLogger } from '../../../src/platform/logger.js';
import { CacheServiceClient, type GrpcVM } from '../../../src/protocol/cache/generated/cache.js';
import { CacheServer } from '../../../src/server/cache-server.js';
import { PromMetrics } from '../../../src/server/metrics.js';
import type { VmRecord } from '../../../src/vm/record.js';
import type { Vm } from '../../../src/vm/vm.js';
import { type InstantVmCounts, instantPool, instantVms } from '../../helpers/instant-vms.js';

/** Socket paths must stay under 107 bytes: a short directory under the system temp directory. */
const dir = mkdtempSync(join(tmpdir(), 'vmc-mp-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const deps = {
  paths: { runDir: dir, imageDir: '/img', cacheDir: dir },
  clock: systemClock,
  logger: nullLogger,
  run: runCommand,
};

/** A server on its own socket in front of a pool of `size` instant VMs; `stop` ends both. */
async function serve(size: number, missPolicy?: MissPolicy, base?: FactoryBase) {
  const counts: InstantVmCounts = { handed: 0, stopped: 0 };
  const metrics = new PromMetrics();
  // The server's metrics, as `factory init` wires them: the pool reports into its labelled view.
  const pool = instantPool(base ?? instantVms(dir, counts), size, 2, metrics);
  const endpoint = join(dir, `s${++n}.sock`);
  const server = new CacheServer(
    pool,
    { endpoint, leaseTimeoutMs: 60_000, agentDialTimeoutMs: 1_000, metricsEndpoint: '', missPolicy },
    deps,
    metrics,
  );
  await server.start();
  const client = new CacheServiceClient(`unix://${endpoint}`, credentials.createInsecure());
  return {
    pool,
    metrics,
    counts,
    endpoint,
    /** A raw GetBaseVM with `md` (as Kata's client when it is empty). */
    get(md: Record<string, string | string[]> = {}): Promise<GrpcVM> {
      const m = new Metadata();
      for (const [k, v] of Object.entries(md)) for (const x of [v].flat()) m.add(k, x);
      return new Promise((resolve, reject) =>
        client.getBaseVm({}, m, { deadline: Date.now() + 5_000 }, (e, r) => (e ? reject(e) : resolve(r!))),
      );
    },
    async stop() {
      client.close();
      await server.stop();
    },
  };
}

/** A gRPC failure with the status and vmcache error code (when sent) it carries. */
function grpcFailure(code: Code, errorCode?: string, details?: RegExp) {
  return (e: ServiceError) => {
    assert.equal(e.code, code, e.details);
    if (errorCode) assert.equal(e.metadata.get(ERROR_CODE_METADATA)[0], errorCode);
    if (details) assert.match(e.details, details);
    return true;
  };
}

async function metric(m: PromMetrics, name: string, labels: Record<string, string>): Promise<number> {
  const v = (await m.registry.getSingleMetric(name)!.get()).values.find((x) =>
    Object.entries(labels).every(([k, l]) => x.labels[k] === l),
  );
  return v?.value ?? 0;
}

describe('GetBaseVM miss policy (server)', () => {
  it('refuses an unknown policy, or several, with INVALID_ARGUMENT naming the key and value', async () => {
    const s = await serve(1);
    try {
      await assert.rejects(
        s.get({ [MISS_POLICY_METADATA]: 'later' }),
        grpcFailure(
          Code.INVALID_ARGUMENT,
          'VMC_ERR_CACHE_PROTOCOL',
          /vmcache-miss-policy .*wait, fail, cold.*"later"/,
        ),
      );
      await assert.rejects(
        // grpc-js joins a repeated header into one value.
        s.get({ [MISS_POLICY_METADATA]: ['wait', 'fail'] }),
        grpcFailure(Code.INVALID_ARGUMENT, 'VMC_ERR_CACHE_PROTOCOL', /got "wait, fail"/),
      );
      await assert.rejects(
        s.get({ [MISS_POLICY_METADATA]: 'x'.repeat(3000) }),
        grpcFailure(Code.INVALID_ARGUMENT, 'VMC_ERR_CACHE_PROTOCOL', /3000 characters/),
      );
      assert.equal(s.pool.status().misses, 0, 'a refused request takes nothing');
    } finally {
      await s.stop();
    }
  });

  it('fail: an empty pool answers at once with RESOURCE_EXHAUSTED and VMC_ERR_CACHE_MISS, counted by policy', async () => {
    const s = await serve(0);
    try {
      const t0 = performance.now();
      await assert.rejects(
        s.get({ [MISS_POLICY_METADATA]: 'fail' }),
        grpcFailure(Code.RESOURCE_EXHAUSTED, 'VMC_ERR_CACHE_MISS'),
      );
      assert.ok(performance.now() - t0 < 1_000, 'at once');
      assert.equal(s.pool.status().missesByPolicy.fail, 1);
      assert.equal(await metric(s.metrics, 'vmcache_misses_total', { policy: 'fail' }), 1);
      assert.equal(await metric(s.metrics, 'vmcache_misses_total', { policy: 'wait' }), 0);
    } finally {
      await s.stop();
    }
  });

  it("applies the server's [cache] miss_policy to a request that does not choose (Kata's client)", async () => {
    const s = await serve(0, 'fail');
    try {
      await assert.rejects(s.get(), grpcFailure(Code.RESOURCE_EXHAUSTED, 'VMC_ERR_CACHE_MISS'));
      // A request's own choice wins over the default.
      const g = await s.get({ [MISS_POLICY_METADATA]: 'cold' });
      assert.ok(g.id);
      assert.deepEqual(s.pool.status().missesByPolicy, { wait: 0, fail: 1, cold: 1 });
    } finally {
      await s.stop();
    }
  });

  it('cold: boots one for the request outside the pool and hands it over', async () => {
    const s = await serve(0);
    try {
      const g = await s.get({ [MISS_POLICY_METADATA]: 'cold', [LEASE_METADATA]: '0' });
      assert.ok(g.id);
      assert.equal(s.counts.handed, 1, 'detached for its new owner as a pool VM is');
      const st = s.pool.status();
      assert.equal(st.missesByPolicy.cold, 1);
      assert.equal(st.idle.length + st.booting, 0, 'the pool (size 0) boots nothing for it');
      assert.equal(await metric(s.metrics, 'vmcache_misses_total', { policy: 'cold' }), 1);
    } finally {
      await s.stop();
    }
  });

  it('wait (the default): served by the boot the request causes', async () => {
    const s = await serve(0);
    try {
      const g = await s.get();
      assert.ok(g.id);
      assert.equal(s.pool.status().missesByPolicy.wait, 1);
    } finally {
      await s.stop();
    }
  });

  it('counts a vmcache-unready report of a VM it handed out, once; refuses a malformed one', async () => {
    const s = await serve(2);
    try {
      await s.pool.waitReady(2, 5_000);
      const g = await s.get();
      await s.get({ [UNREADY_METADATA]: g.id });
      await s.get({ [UNREADY_METADATA]: g.id });
      await s.pool.waitReady(1, 5_000);
      await s.get({ [UNREADY_METADATA]: 'abc123' }); // never handed out: not counted
      assert.deepEqual(s.pool.status().handoutDiscards, { qemu: 0, agent: 1 });
      assert.equal(await metric(s.metrics, 'vmcache_handout_discards_total', { check: 'agent' }), 1);
      await assert.rejects(
        s.get({ [UNREADY_METADATA]: '../etc' }),
        grpcFailure(Code.INVALID_ARGUMENT, 'VMC_ERR_CACHE_PROTOCOL', /vmcache-unready/),
      );
    } finally {
      await s.stop();
    }
  });
});

/** A stand-in for an adopted VM whose agent answers after resume, or not (`silent`: resume never ends). */
function adopted(record: VmRecord, silent: boolean, log: string[]): Vm {
  return {
    id: record.id,
    record,
    resume: () => {
      log.push(`resume ${record.id}`);
      return silent ? new Promise(() => {}) : Promise.resolve();
    },
    pause: async () => void log.push(`pause ${record.id}`),
    destroy: async () => void log.push(`destroy ${record.id}`),
  } as unknown as Vm;
}

describe('RemoteCacheFactory at hand-out (the agent must answer after resume)', () => {
  /** A client whose `silent` VMs (by order taken, 1-based) never answer after resume. */
  async function client(endpoint: string, silent: number[], opts: { missPolicy?: MissPolicy } = {}) {
    const log: string[] = [];
    let taken = 0;
    const remote = await RemoteCacheFactory.connect(endpoint, deps, {
      ...opts,
      readyTimeoutMs: 50,
      attach: async (record) => adopted(record, silent.includes(++taken), log),
    });
    return { remote, log };
  }

  it('stops a VM whose agent is silent, transparently takes the next, and the server counts it', async () => {
    const s = await serve(2);
    try {
      await s.pool.waitReady(2, 5_000);
      const { remote, log } = await client(s.endpoint, [1]);
      try {
        const vm = await remote.getBaseVM();
        const [bad] = log[0]!.split(' ').slice(1);
        assert.notEqual(vm.id, bad);
        assert.deepEqual(log, [`resume ${bad}`, `destroy ${bad}`, `resume ${vm.id}`, `pause ${vm.id}`]);
        assert.deepEqual(s.pool.status().handoutDiscards, { qemu: 0, agent: 1 });
        assert.equal(s.pool.status().hits, 2);
      } finally {
        await remote.close();
      }
    } finally {
      await s.stop();
    }
  });

  it('applies the miss policy to the replacement: fail on an empty pool is VMC_ERR_CACHE_MISS', async () => {
    // One instant VM, then boots that take longer than the test (aborted when the pool closes).
    const instant = instantVms(dir);
    let boots = 0;
    const slow: FactoryBase = {
      ...instant,
      getBaseVM: async (signal) => {
        if (boots++ > 0) await systemClock.sleep(60_000, signal);
        return instant.getBaseVM();
      },
    };
    const s = await serve(1, undefined, slow);
    try {
      await s.pool.waitReady(1, 5_000);
      const { remote } = await client(s.endpoint, [1], { missPolicy: 'fail' });
      try {
        await assert.rejects(remote.getBaseVM(), (e) => isVmcError(e, 'VMC_ERR_CACHE_MISS'));
        assert.equal(s.pool.status().handoutDiscards.agent, 1);
      } finally {
        await remote.close();
      }
    } finally {
      await s.stop();
    }
  });

  it('gives up after 3 silent VMs in a row with VMC_ERR_AGENT_TIMEOUT', async () => {
    const s = await serve(3);
    try {
      await s.pool.waitReady(3, 5_000);
      const { remote, log } = await client(s.endpoint, [1, 2, 3, 4]);
      try {
        await assert.rejects(
          remote.getBaseVM(),
          (e) => isVmcError(e, 'VMC_ERR_AGENT_TIMEOUT') && /3 VMs in a row/.test(e.message),
        );
        assert.equal(log.filter((l) => l.startsWith('destroy')).length, 3);
      } finally {
        await remote.close();
      }
    } finally {
      await s.stop();
    }
  });

  it('sends the miss policy chosen per call over the connection default, and none when none is chosen', async () => {
    const seen: Array<string | undefined> = [];
    const s = await serve(0);
    try {
      // The server's answer to each shows what it received: fail is refused at once, wait and cold are served.
      const { remote } = await client(s.endpoint, [], { missPolicy: 'fail' });
      const none = await client(s.endpoint, []);
      try {
        await assert.rejects(remote.getBaseVM(), (e) => isVmcError(e, 'VMC_ERR_CACHE_MISS'));
        seen.push((await remote.getBaseVM(undefined, { missPolicy: 'cold' })).id);
        seen.push((await none.remote.getBaseVM()).id);
        assert.equal(seen.length, 2);
        assert.deepEqual(s.pool.status().missesByPolicy, { wait: 1, fail: 1, cold: 1 });
      } finally {
        await remote.close();
        await none.remote.close();
      }
    } finally {
      await s.stop();
    }
  });

  it('a policy the server does not know (a newer client, say) comes back as VMC_ERR_CACHE_PROTOCOL naming it', async () => {
    const s = await serve(0);
    try {
      const { remote } = await client(s.endpoint, [], { missPolicy: 'soon' as MissPolicy });
      try {
        await assert.rejects(
          remote.getBaseVM(),
          (e) => isVmcError(e, 'VMC_ERR_CACHE_PROTOCOL') && /"soon"/.test(e.message),
        );
      } finally {
        await remote.close();
      }
    } finally {
      await s.stop();
    }
  });
});

describe('the TypeScript API (connectCache) miss policy option', () => {
  it('getVM({}, { missPolicy }) asks for it on that call; connectCache({ missPolicy }) on every call', async () => {
    const s = await serve(0); // empty: the server's default (wait) would boot one
    try {
      const perCall = await connectCache(s.endpoint);
      const perConnection = await connectCache(s.endpoint, { missPolicy: 'fail' });
      try {
        await assert.rejects(perCall.getVM({}, { missPolicy: 'fail' }), (e) =>
          isVmcError(e, 'VMC_ERR_CACHE_MISS'),
        );
        await assert.rejects(perConnection.getVM(), (e) => isVmcError(e, 'VMC_ERR_CACHE_MISS'));
        assert.deepEqual(s.pool.status().missesByPolicy, { wait: 0, fail: 2, cold: 0 });
      } finally {
        await perCall.close();
        await perConnection.close();
      }
    } finally {
      await s.stop();
    }
  });
});
