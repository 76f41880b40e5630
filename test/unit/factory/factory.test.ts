import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { isVmcError, VmcError } from '../../../src/errors.js';
import type { FactoryBase } from '../../../src/factory/base.js';
import { specMismatch, VmFactory } from '../../../src/factory/factory.js';
import { type FactoryMetrics, nullMetrics } from '../../../src/factory/metrics.js';
import type { DetachedSpawner } from '../../../src/hypervisor/qemu/launcher.js';
import { type VmSpec, vmFiles } from '../../../src/hypervisor/types.js';
import type { Logger } from '../../../src/platform/logger.js';
import type { Vm } from '../../../src/vm/vm.js';
import { ManualClock } from '../../helpers/manual-clock.js';

const root = mkdtempSync(join(tmpdir(), 'vmc-composer-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

/** A logger that keeps its warnings. */
function recordingLogger(): Logger & { warnings: Array<{ obj: Record<string, unknown>; msg: string }> } {
  const warnings: Array<{ obj: Record<string, unknown>; msg: string }> = [];
  const log: Logger = {
    debug() {},
    info() {},
    warn(obj, msg) {
      warnings.push({ obj, msg });
    },
    error() {},
    child: () => log,
  };
  return Object.assign(log, { warnings });
}

/**
 * A paused VM stand-in that logs every call the composer makes on it, in order. `fail` names the call that
 * throws. Resume takes a few turns of the event loop, so a step started before it finished would show.
 */
function fakeVm(spec: VmSpec, calls: string[], fail?: string) {
  const dir = join(root, `vm${n++}`);
  mkdirSync(dir);
  const step = (name: string) => {
    calls.push(name);
    if (name === fail) throw new VmcError('VMC_ERR_AGENT_REQUEST', `${name} failed`);
  };
  const requests: Array<Record<string, unknown>> = [];
  return {
    id: `vm${n}`,
    requests,
    record: { id: `vm${n}`, spec, hotplug: { cpus: 0, memoryMiB: 0 }, files: vmFiles(dir) },
    async resume() {
      step('resume');
      for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
      calls.push('resumed');
    },
    agent: {
      async request(req: Record<string, unknown>) {
        requests.push(req);
        step(`agent ${req.op}`);
        return {};
      },
      /** As the client's: the result and a trace, with guest times as an agent reports them. */
      async requestTraced(req: Record<string, unknown>) {
        const result = await this.request(req);
        const guest = { rx: 1_000, tx: req.op === 'reseed' ? 1_250 : 1_500 };
        return { result, trace: { op: req.op, sentMs: 0, receivedMs: 2, guest } };
      },
    },
    qmp: {
      async execute(cmd: string) {
        step(`qmp ${cmd}`);
        if (cmd === 'query-hotpluggable-cpus')
          return [{ type: 'max-x86_64-cpu', 'vcpus-count': 1, props: { 'socket-id': 1 } }];
        return {};
      },
    },
    async destroy() {
      calls.push('destroy');
    },
  };
}

/** A base that hands out fake VMs booted from `spec`. */
function fakeBase(spec: VmSpec, calls: string[], fail?: string) {
  const made: Array<ReturnType<typeof fakeVm>> = [];
  const base: FactoryBase & { made: typeof made } = {
    made,
    config: () => spec,
    async getBaseVM() {
      calls.push('getBaseVM');
      const vm = fakeVm(spec, calls, fail);
      made.push(vm);
      return vm as unknown as Vm;
    },
    async close() {
      calls.push('close');
    },
  };
  return base;
}

function composer(base: FactoryBase, extra: { spawner?: DetachedSpawner; metrics?: FactoryMetrics } = {}) {
  const clock = new ManualClock();
  const logger = recordingLogger();
  const paths = { runDir: join(root, `run${n++}`), imageDir: '/img', cacheDir: '/cache' };
  const run = async () => assert.fail('the composer runs no host commands');
  const factory = new VmFactory(base, { paths, clock, logger, run, ...extra });
  return { factory, clock, logger, paths };
}

const spec = defaultVmSpec('/img', 'tcg');

describe('VmFactory (the composer)', () => {
  it("reports its phases in order and the guest's handling of reseed and set-time", async () => {
    const calls: string[] = [];
    const { factory } = composer(fakeBase(spec, calls));
    const got = await factory.getVM({ ...spec, cpus: 2 });
    // The fake VM's resume laps nothing; a base that laps nothing is lapped whole as getBaseVM.
    assert.deepEqual(
      got.phases.phases.map((p) => p.name),
      ['getBaseVM', 'reseed + set-time', 'grow'],
    );
    const guest = got.phases.figures.filter((f) => f.clock === 'guest');
    assert.deepEqual(
      guest.map((f) => [f.phase, f.name, f.ms]),
      [
        ['reseed + set-time', 'reseed: handling (read → answered)', 0.25],
        ['reseed + set-time', 'set-time: handling (read → answered)', 0.5],
      ],
    );
    const outside = got.phases.figures.find(
      (f) => f.name === 'set-time: outside the guest (transport, event loops)',
    );
    assert.equal(outside?.ms, 1.5); // round trip 2 ms, of which the guest handled 0.5
  });

  it('lists exactly the boot-relevant fields that differ, comparing values deeply', () => {
    assert.deepEqual(specMismatch(spec, { ...spec }), []);
    assert.deepEqual(specMismatch(spec, { ...spec, kernelParams: [...spec.kernelParams] }), []);
    assert.deepEqual(
      specMismatch(spec, { ...spec, kernel: '/other/vmlinux', kernelParams: ['quiet'], cpus: 4 }),
      ['kernel', 'kernelParams'],
    );
  });

  it('resumes, then reseeds and sets the clock, then grows, on a VM from the base', async () => {
    const calls: string[] = [];
    const base = fakeBase(spec, calls);
    const { factory, clock } = composer(base);
    const got = await factory.getVM({ ...spec, cpus: 2 });
    assert.deepEqual(calls, [
      'getBaseVM',
      'resume',
      'resumed',
      'agent reseed',
      'agent set-time',
      'qmp query-hotpluggable-cpus',
      'qmp device_add',
      'agent online',
    ]);
    const vm = base.made[0]!;
    assert.equal(got.vm, vm as unknown as Vm);
    assert.equal(got.source, 'base');
    assert.deepEqual(got.mismatched, []);
    const [reseed, setTime] = vm.requests;
    assert.match(String(reseed!.data), /^[0-9a-f]{64}$/, '32 random bytes for the guest RNG');
    assert.equal(setTime!.epochNs, (BigInt(clock.now()) * 1_000_000n).toString());
    assert.equal(got.timings.totalMs, got.timings.acquireMs + got.timings.readyMs);
  });

  it('gives every VM its own entropy, and does not grow a VM that is large enough', async () => {
    const calls: string[] = [];
    const base = fakeBase(spec, calls);
    const { factory } = composer(base);
    // Size is not boot-relevant: a smaller request is served from the base as it is.
    await factory.getVM({ ...spec, cpus: 1, memoryMiB: 256 });
    await factory.getVM(spec);
    assert.ok(!calls.some((c) => c.startsWith('qmp')), calls.join(', '));
    const [a, b] = base.made.map((vm) => vm.requests[0]!.data);
    assert.notEqual(a, b);
  });

  it('boots directly from the request on a boot-relevant mismatch, warns naming the fields, and counts it', async () => {
    const calls: string[] = [];
    const base = fakeBase(spec, calls);
    const fallbacks: string[][] = [];
    const spawned: Array<{ cmd: string; args: readonly string[] }> = [];
    const spawner: DetachedSpawner = async (cmd, args) => {
      spawned.push({ cmd, args });
      throw new VmcError('VMC_ERR_HOST_PREREQ', `cannot start ${cmd}: ENOENT`);
    };
    const { factory, logger, paths } = composer(base, {
      spawner,
      metrics: { ...nullMetrics, fallback: (fields) => fallbacks.push(fields) },
    });
    const requested = { ...spec, qemuPath: '/opt/qemu/bin/qemu-system-x86_64', kernel: '/other/vmlinux' };
    await assert.rejects(factory.getVM(requested), (e) => isVmcError(e, 'VMC_ERR_HOST_PREREQ'));
    assert.deepEqual(calls, [], 'the base is not asked');
    assert.deepEqual(fallbacks, [['qemuPath', 'kernel']]);
    assert.equal(logger.warnings.length, 1);
    assert.deepEqual(logger.warnings[0]!.obj, { fields: ['qemuPath', 'kernel'] });
    assert.match(logger.warnings[0]!.msg, /booting directly/);
    // The direct boot is of the requested machine, not the base's.
    assert.equal(spawned.length, 1);
    assert.equal(spawned[0]!.cmd, requested.qemuPath);
    assert.ok(spawned[0]!.args.includes(requested.kernel), spawned[0]!.args.join(' '));
    // The failed boot left nothing behind.
    assert.deepEqual(existsSync(join(paths.runDir, 'vm')) ? readdirSync(join(paths.runDir, 'vm')) : [], []);
  });

  for (const step of ['resume', 'agent reseed', 'agent set-time', 'qmp device_add', 'agent online']) {
    it(`destroys the VM and rethrows when ${step} fails`, async () => {
      const calls: string[] = [];
      const { factory } = composer(fakeBase(spec, calls, step));
      await assert.rejects(
        factory.getVM({ ...spec, cpus: 2 }),
        (e) => isVmcError(e, 'VMC_ERR_AGENT_REQUEST') && e.message === `${step} failed`,
      );
      assert.equal(calls.at(-1), 'destroy', calls.join(', '));
      assert.equal(calls.filter((c) => c === 'destroy').length, 1);
    });
  }

  it('destroys the VM when the request is beyond its hot-plug limits', async () => {
    const calls: string[] = [];
    const { factory } = composer(fakeBase(spec, calls));
    await assert.rejects(
      factory.getVM({ ...spec, cpus: spec.maxCpus + 1 }),
      (e) => isVmcError(e, 'VMC_ERR_CONFIG_INVALID') && /hot-plug limit/.test(e.message),
    );
    assert.equal(calls.at(-1), 'destroy');
  });

  it('passes a failed acquisition through without anything to destroy, and closes the base', async () => {
    const calls: string[] = [];
    const base = fakeBase(spec, calls);
    base.getBaseVM = async () => {
      throw new VmcError('VMC_ERR_CACHE_TIMEOUT', 'no VM ready');
    };
    const { factory } = composer(base);
    assert.equal(factory.config(), spec);
    await assert.rejects(factory.getVM(spec), (e) => isVmcError(e, 'VMC_ERR_CACHE_TIMEOUT'));
    await factory.close();
    assert.deepEqual(calls, ['close']);
  });

  it('records what it hot-plugged in the VM record on disk', async () => {
    const calls: string[] = [];
    const base = fakeBase(spec, calls);
    const { factory } = composer(base);
    await factory.getVM({ ...spec, cpus: 2 });
    const vm = base.made[0]!;
    const onDisk = JSON.parse(readFileSync(vm.record.files.record, 'utf8'));
    assert.deepEqual(onDisk.hotplug, { cpus: 1, memoryMiB: 0 });
  });
});
