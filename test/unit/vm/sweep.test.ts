import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { vmFiles } from '../../../src/hypervisor/types.js';
import { systemClock } from '../../../src/platform/clock.js';
import { runCommand } from '../../../src/platform/command.js';
import { nullLogger } from '../../../src/platform/logger.js';
import { identify, isAlive, type ProcessIdentity } from '../../../src/platform/process.js';
import { VM_RECORD_VERSION, writeRecord } from '../../../src/vm/record.js';
import { sweepOrphans } from '../../../src/vm/sweep.js';

/** Real processes stand in for QEMU: the sweep only looks at identities, records and directories. */
describe('orphan sweep', () => {
  const runDir = mkdtempSync(join(tmpdir(), 'vmc-sweep-'));
  const deps = {
    paths: { runDir, imageDir: '/img', cacheDir: '/c' },
    clock: systemClock,
    logger: nullLogger,
    run: runCommand,
  };
  const children: number[] = [];
  after(() => {
    for (const pid of children)
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    rmSync(runDir, { recursive: true, force: true });
  });

  function fakeVm(
    id: string,
    owner: ProcessIdentity | null,
    qemuAlive = true,
    pooledBy: ProcessIdentity | null = null,
  ): ProcessIdentity {
    const files = vmFiles(join(runDir, 'vm', id));
    mkdirSync(files.dir, { recursive: true });
    let qemu: ProcessIdentity;
    if (qemuAlive) {
      const c = spawn('sleep', ['60'], { detached: true, stdio: 'ignore' });
      c.unref();
      children.push(c.pid!);
      qemu = identify(c.pid!)!;
    } else {
      qemu = { pid: process.pid, startTime: 1 }; // our pid with a wrong start time: a reused pid
    }
    writeRecord({
      version: VM_RECORD_VERSION,
      id,
      createdAt: Date.now(),
      spec: defaultVmSpec('/img', 'tcg'),
      files,
      qemu,
      owner,
      pooledBy,
      hotplug: { cpus: 0, memoryMiB: 0 },
    });
    return qemu;
  }

  it('kills VMs whose owner is gone, removes records of dead VMs, keeps owned and unowned live VMs', async () => {
    const self = identify(process.pid)!;
    const deadOwner = { pid: self.pid, startTime: self.startTime + 12345 };
    const orphan = fakeVm('orphan', deadOwner);
    const owned = fakeVm('owned', self);
    const waiting = fakeVm('waiting', null);
    fakeVm('exited', self, false);

    const r = await sweepOrphans(deps);
    assert.deepEqual(r.reaped, ['orphan']);
    assert.deepEqual(r.removed, ['exited']);
    assert.equal(isAlive(orphan), false);
    assert.equal(existsSync(join(runDir, 'vm', 'orphan')), false);
    assert.equal(existsSync(join(runDir, 'vm', 'exited')), false);
    assert.equal(isAlive(owned), true);
    assert.equal(isAlive(waiting), true);

    const again = await sweepOrphans(deps, { includeUnowned: true });
    assert.deepEqual(again.reaped, ['waiting'], 'unowned VMs are stopped only when asked');
    assert.equal(isAlive(waiting), false);
    assert.equal(isAlive(owned), true);
  });

  it('leaves the idle VMs of a dead server to its successor when asked, and nothing a client took', async () => {
    const self = identify(process.pid)!;
    const deadServer = { pid: self.pid, startTime: self.startTime + 777 };
    const deadClient = { pid: self.pid, startTime: self.startTime + 778 };
    const idle = fakeVm('pooled-idle', deadServer, true, deadServer);
    const taken = fakeVm('pooled-taken', deadClient, true, deadServer);

    const r = await sweepOrphans(deps, { leavePooled: true });
    assert.deepEqual(r.reaped, ['pooled-taken'], 'a VM a client took and left behind is an orphan as before');
    assert.equal(isAlive(taken), false);
    assert.equal(isAlive(idle), true, 'left for the next server to adopt');

    const again = await sweepOrphans(deps);
    assert.deepEqual(again.reaped, ['pooled-idle'], 'any other sweep reaps it as today');
    assert.equal(isAlive(idle), false);
  });

  it('treats a pid with another start time as a different process', () => {
    const self = identify(process.pid)!;
    assert.equal(isAlive(self), true);
    assert.equal(isAlive({ pid: self.pid, startTime: self.startTime + 1 }), false);
  });
});
