import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../../src/errors.js';
import { loadState, saveState, shellQuote } from '../../../../src/hypervisor/qemu/migration.js';
import {
  addCpu,
  addDimm,
  addNic,
  cont,
  type Qmp,
  queryStatus,
  quit,
  stop,
} from '../../../../src/hypervisor/qemu/qmp-commands.js';
import { ManualClock } from '../../../helpers/manual-clock.js';

type Call = { command: string; args?: Record<string, unknown>; timeoutMs?: number };

/** A QMP connection that records what it is sent and answers with `answer(command)`. */
function fakeQmp(answer: (command: string) => unknown = () => ({})): Qmp & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    execute: async <T>(command: string, args?: Record<string, unknown>, timeoutMs?: number) => {
      calls.push(timeoutMs === undefined ? { command, args } : { command, args, timeoutMs });
      return answer(command) as T;
    },
  };
}

describe('QMP commands', () => {
  it('sends stop, cont, quit and query-status, with the timeout when one is given', async () => {
    const qmp = fakeQmp(() => ({ status: 'paused', running: false }));
    await stop(qmp);
    await cont(qmp);
    assert.equal(await queryStatus(qmp), 'paused');
    assert.equal(await queryStatus(qmp, 2_000), 'paused');
    await quit(qmp, 2_000);
    assert.deepEqual(qmp.calls, [
      { command: 'stop', args: undefined },
      { command: 'cont', args: undefined },
      { command: 'query-status', args: undefined },
      { command: 'query-status', args: undefined, timeoutMs: 2_000 },
      { command: 'quit', args: undefined, timeoutMs: 2_000 },
    ]);
  });

  it('plugs a vCPU into a slot, a DIMM with its backend, and a NIC on its tap and root port', async () => {
    const qmp = fakeQmp();
    await addCpu(qmp, { type: 'max-x86_64-cpu', 'vcpus-count': 1, props: { 'socket-id': 3 } }, 3);
    await addDimm(qmp, 256, 128 * 2 ** 20);
    await addNic(qmp, 1, { tap: 'vmtabcdef011', mac: '0a:58:c6:12:00:02' });
    assert.deepEqual(qmp.calls, [
      { command: 'device_add', args: { driver: 'max-x86_64-cpu', id: 'vcpu-hp3', 'socket-id': 3 } },
      { command: 'object-add', args: { 'qom-type': 'memory-backend-ram', id: 'hpmem256', size: 134217728 } },
      { command: 'device_add', args: { driver: 'pc-dimm', id: 'hpdimm256', memdev: 'hpmem256' } },
      {
        command: 'netdev_add',
        args: { type: 'tap', id: 'podnet1', ifname: 'vmtabcdef011', script: 'no', downscript: 'no' },
      },
      {
        command: 'device_add',
        args: {
          driver: 'virtio-net-pci',
          id: 'podnic1',
          netdev: 'podnet1',
          mac: '0a:58:c6:12:00:02',
          bus: 'rp2',
        },
      },
    ]);
  });
});

describe('template migration', () => {
  const completed = (command: string) => (command === 'query-migrate' ? { status: 'completed' } : {});

  it('saves with x-ignore-shared to a file, polling until the migration completes', async () => {
    let polls = 0;
    const qmp = fakeQmp((c) =>
      c === 'query-migrate' ? { status: ++polls < 3 ? 'active' : 'completed' } : {},
    );
    const clock = new ManualClock();
    const saving = saveState(qmp, "/t/it's/state", clock);
    await clock.advance(100);
    await saving;
    assert.deepEqual(
      qmp.calls.map((c) => c.command),
      ['migrate-set-capabilities', 'migrate', 'query-migrate', 'query-migrate', 'query-migrate'],
    );
    assert.deepEqual(qmp.calls[0]!.args, { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    assert.deepEqual(qmp.calls[1]!.args, { uri: `exec:cat > '/t/it'\\''s/state'` });
  });

  it('loads with x-ignore-shared from a file', async () => {
    const qmp = fakeQmp(completed);
    await loadState(qmp, '/t/state', new ManualClock());
    assert.deepEqual(
      qmp.calls.map((c) => [c.command, c.args]),
      [
        ['migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] }],
        ['migrate-incoming', { uri: "exec:cat '/t/state'" }],
        ['query-migrate', undefined],
      ],
    );
  });

  it("fails with VMC_ERR_TEMPLATE_FAILED and QEMU's reason when the migration fails", async () => {
    const qmp = fakeQmp((c) =>
      c === 'query-migrate' ? { status: 'failed', 'error-desc': 'disk full' } : {},
    );
    await assert.rejects(
      saveState(qmp, '/t/state', new ManualClock()),
      (e) => isVmcError(e, 'VMC_ERR_TEMPLATE_FAILED') && /migration failed: disk full/.test(e.message),
    );
  });

  it('quotes paths for the shell that runs exec: URIs', () => {
    assert.equal(shellQuote('/a b'), "'/a b'");
    assert.equal(shellQuote("it's"), "'it'\\''s'");
  });
});
