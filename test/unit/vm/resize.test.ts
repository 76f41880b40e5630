import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { isVmcError } from '../../../src/errors.js';
import { type VmSpec, vmFiles } from '../../../src/hypervisor/types.js';
import { currentShape, grow, MEMORY_BLOCK_MIB } from '../../../src/vm/resize.js';
import type { Vm } from '../../../src/vm/vm.js';

const root = mkdtempSync(join(tmpdir(), 'vmc-resize-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;

/**
 * A running VM stand-in: QMP lists the vCPU slots of a 4-slot q35 machine (highest id first, as QEMU does; the
 * boot vCPUs have a QOM path) and takes every command; the agent takes every request. Both log what they got.
 */
function fakeVm(spec: VmSpec, hotplug = { cpus: 0, memoryMiB: 0 }) {
  const dir = join(root, `vm${n++}`);
  mkdirSync(dir);
  const qmp: Array<[string, unknown]> = [];
  const agent: Array<[Record<string, unknown>, number | undefined]> = [];
  const used = spec.cpus + hotplug.cpus;
  const slots = [3, 2, 1, 0].map((socket) => ({
    type: 'max-x86_64-cpu',
    'vcpus-count': 1,
    props: { 'socket-id': socket, 'core-id': 0, 'thread-id': 0 },
    ...(socket < used ? { 'qom-path': `/machine/unattached/device[${socket}]` } : {}),
  }));
  const vm = {
    id: `vm${n}`,
    record: { id: `vm${n}`, spec, hotplug, files: vmFiles(dir) },
    qmp: {
      async execute(cmd: string, args?: unknown) {
        qmp.push([cmd, args]);
        return cmd === 'query-hotpluggable-cpus' ? slots : {};
      },
    },
    agent: {
      async request(req: Record<string, unknown>, timeoutMs?: number) {
        agent.push([req, timeoutMs]);
        return {};
      },
    },
  };
  return { vm: vm as unknown as Vm, qmp, agent, recordFile: vm.record.files.record };
}

const spec = { ...defaultVmSpec('/img', 'tcg'), cpus: 1, maxCpus: 4, memoryMiB: 512, maxMemoryMiB: 1024 };

describe('VM resize (hot-plug growth)', () => {
  it('counts what was hot-plugged in the current shape', () => {
    assert.deepEqual(currentShape(fakeVm(spec, { cpus: 2, memoryMiB: 256 }).vm), { cpus: 3, memoryMiB: 768 });
  });

  it('does nothing, not even a QMP query, for a request the VM already meets (it never shrinks)', async () => {
    const f = fakeVm(spec, { cpus: 1, memoryMiB: 128 });
    assert.deepEqual(await grow(f.vm, { cpus: 2, memoryMiB: 640 }), { addedCpus: 0, addedMemoryMiB: 0 });
    assert.deepEqual(await grow(f.vm, { cpus: 1, memoryMiB: 256 }), { addedCpus: 0, addedMemoryMiB: 0 });
    assert.deepEqual(f.qmp, []);
    assert.deepEqual(f.agent, []);
  });

  it('plugs vCPUs into the lowest free slots, records them, and has the agent online them', async () => {
    const f = fakeVm(spec);
    assert.deepEqual(await grow(f.vm, { cpus: 3, memoryMiB: 512 }), { addedCpus: 2, addedMemoryMiB: 0 });
    assert.deepEqual(f.qmp, [
      ['query-hotpluggable-cpus', undefined],
      [
        'device_add',
        { driver: 'max-x86_64-cpu', id: 'vcpu-hp1', 'socket-id': 1, 'core-id': 0, 'thread-id': 0 },
      ],
      [
        'device_add',
        { driver: 'max-x86_64-cpu', id: 'vcpu-hp2', 'socket-id': 2, 'core-id': 0, 'thread-id': 0 },
      ],
    ]);
    assert.deepEqual(f.vm.record.hotplug, { cpus: 2, memoryMiB: 0 });
    assert.deepEqual(JSON.parse(readFileSync(f.recordFile, 'utf8')).hotplug, { cpus: 2, memoryMiB: 0 });
    // Onlining a vCPU under TCG takes seconds: the agent gets a generous bound.
    assert.deepEqual(f.agent, [[{ op: 'online', cpus: 3, memory: false }, 120_000]]);
  });

  it('adds memory in whole 128 MiB blocks as one DIMM, with ids that stay unique across grows', async () => {
    assert.equal(MEMORY_BLOCK_MIB, 128);
    const f = fakeVm(spec);
    assert.deepEqual(await grow(f.vm, { cpus: 1, memoryMiB: 700 }), { addedCpus: 0, addedMemoryMiB: 256 });
    assert.deepEqual(f.qmp, [
      ['object-add', { 'qom-type': 'memory-backend-ram', id: 'hpmem0', size: 256 * 2 ** 20 }],
      ['device_add', { driver: 'pc-dimm', id: 'hpdimm0', memdev: 'hpmem0' }],
    ]);
    assert.deepEqual(f.agent, [[{ op: 'online', cpus: 0, memory: true }, 120_000]]);
    await grow(f.vm, { cpus: 1, memoryMiB: 800 });
    const ids = f.qmp.map(([, a]) => (a as { id: string }).id);
    assert.equal(new Set(ids).size, ids.length, ids.join(', '));
    assert.deepEqual(JSON.parse(readFileSync(f.recordFile, 'utf8')).hotplug, { cpus: 0, memoryMiB: 384 });
  });

  it('refuses growth past the hot-plug limits before touching the VM, naming the limit', async () => {
    const f = fakeVm(spec);
    await assert.rejects(
      grow(f.vm, { cpus: 5, memoryMiB: 512 }),
      (e) => isVmcError(e, 'VMC_ERR_CONFIG_INVALID') && /default_maxvcpus\) is 4/.test(e.message),
    );
    // 1025 MiB is 513 MiB more, rounded up to 640: past the 1024 MiB limit.
    await assert.rejects(
      grow(f.vm, { cpus: 1, memoryMiB: 1025 }),
      (e) => isVmcError(e, 'VMC_ERR_CONFIG_INVALID') && /default_maxmemory\) is 1024 MiB/.test(e.message),
    );
    assert.deepEqual(f.qmp, []);
    assert.deepEqual(f.vm.record.hotplug, { cpus: 0, memoryMiB: 0 });
  });

  it('counts the rounding up to a block against the memory limit', async () => {
    const f = fakeVm({ ...spec, maxMemoryMiB: 600 });
    await assert.rejects(
      grow(f.vm, { cpus: 1, memoryMiB: 600 }),
      (e) => isVmcError(e, 'VMC_ERR_CONFIG_INVALID'),
      '600 MiB needs a 128 MiB block: 640 MiB is past the limit',
    );
  });

  it('fails with an invalid-state error when the machine has no free vCPU slot left', async () => {
    const f = fakeVm({ ...spec, maxCpus: 8 });
    await assert.rejects(
      grow(f.vm, { cpus: 6, memoryMiB: 512 }),
      (e) => isVmcError(e, 'VMC_ERR_INVALID_STATE') && /no free vCPU hot-plug slot/.test(e.message),
    );
  });
});
