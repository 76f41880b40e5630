import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { VmcError } from '../../../src/errors.js';
import { vmFiles } from '../../../src/hypervisor/types.js';
import { systemClock } from '../../../src/platform/clock.js';
import { runCommand } from '../../../src/platform/command.js';
import { nullLogger } from '../../../src/platform/logger.js';
import { identify, isAlive, type ProcessIdentity } from '../../../src/platform/process.js';
import { adoptIdleVms } from '../../../src/vm/adopt.js';
import {
  isIdleInPool,
  readRecord,
  sameProcess,
  VM_RECORD_VERSION,
  type VmRecord,
  writeRecord,
} from '../../../src/vm/record.js';
import type { Vm } from '../../../src/vm/vm.js';

const SPEC = defaultVmSpec('/img', 'tcg');
const self = identify(process.pid)!;
/** Our pid with another start time: a process that is gone (as a server killed with kill -9). */
const deadServer: ProcessIdentity = { pid: self.pid, startTime: self.startTime + 12345 };
const deadClient: ProcessIdentity = { pid: self.pid, startTime: self.startTime + 54321 };

/** A VM stand-in for what adoption touches once attached: the record, the agent check, detach and destroy. */
class FakeVm {
  detached = false;
  destroyed = false;
  probed = false;
  constructor(readonly record: VmRecord) {}
  get id() {
    return this.record.id;
  }
  detach() {
    this.detached = true;
  }
  async destroy() {
    this.destroyed = true;
    process.kill(this.record.qemu.pid, 'SIGKILL');
    rmSync(this.record.files.dir, { recursive: true, force: true });
  }
}

/** Real processes stand in for QEMU (adoption looks at identities, records and directories). */
describe('re-adoption of the idle VMs of a dead server', () => {
  const dirs: string[] = [];
  const children: number[] = [];
  const servers: Server[] = [];
  after(() => {
    for (const pid of children)
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    for (const s of servers) s.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  function env() {
    // Short: QMP socket paths must stay below the 107-byte limit.
    const runDir = mkdtempSync(join(tmpdir(), 'vmc-ad-'));
    dirs.push(runDir);
    return {
      paths: { runDir, imageDir: '/img', cacheDir: '/c' },
      clock: systemClock,
      logger: nullLogger,
      run: runCommand,
    };
  }

  function liveProcess(): ProcessIdentity {
    const c = spawn('sleep', ['60'], { detached: true, stdio: 'ignore' });
    c.unref();
    children.push(c.pid!);
    return identify(c.pid!)!;
  }

  function fakeVm(
    runDir: string,
    id: string,
    o: Partial<Pick<VmRecord, 'owner' | 'pooledBy' | 'spec' | 'createdAt' | 'hotplug'>> = {},
  ): VmRecord {
    const files = vmFiles(join(runDir, 'vm', id));
    mkdirSync(files.dir, { recursive: true });
    const r: VmRecord = {
      version: VM_RECORD_VERSION,
      id,
      createdAt: Date.now(),
      spec: SPEC,
      files,
      qemu: liveProcess(),
      owner: deadServer,
      pooledBy: deadServer,
      hotplug: { cpus: 0, memoryMiB: 0 },
      ...o,
    };
    writeRecord(r);
    return r;
  }

  const sameSpec = (r: VmRecord) => r.spec.memoryMiB === SPEC.memoryMiB && r.spec.cpus === SPEC.cpus;

  it('tells an idle pooled VM from one a client took, by the owner recorded since it entered the pool', () => {
    const base = { owner: deadServer, pooledBy: deadServer } as VmRecord;
    assert.equal(isIdleInPool(base), true);
    assert.equal(isIdleInPool({ ...base, owner: deadClient }), false, 'a client took it');
    assert.equal(isIdleInPool({ ...base, owner: null }), false, 'handed to a Kata client (unowned)');
    assert.equal(
      isIdleInPool({ ...base, pooledBy: null }),
      false,
      'never marked (booting, or an old record)',
    );
    assert.equal(isIdleInPool({ ...base, pooledBy: undefined }), false);
    assert.equal(sameProcess(self, { ...self }), true);
    assert.equal(sameProcess(self, deadServer), false);
  });

  it('adopts a paused, answering VM of the pool shape: same id, same QEMU, this process its owner', async () => {
    const deps = env();
    const r = fakeVm(deps.paths.runDir, 'idle');
    const made: FakeVm[] = [];
    const res = await adoptIdleVms(deps, {
      accepts: sameSpec,
      limit: 2,
      attach: async (rec) => {
        const vm = new FakeVm(rec);
        made.push(vm);
        return vm as unknown as Vm;
      },
      probe: async (vm) => {
        // The agent check runs once this process is the recorded owner (a sweep meanwhile leaves it alone).
        assert.ok(sameProcess(readRecord(vm.record.files.dir).owner, self));
        (vm as unknown as FakeVm).probed = true;
      },
    });
    assert.deepEqual(
      res.adopted.map((v) => v.id),
      ['idle'],
    );
    assert.deepEqual(res.reaped, []);
    assert.deepEqual(res.left, []);
    assert.equal(made[0]!.probed, true);
    assert.equal(isAlive(r.qemu), true, 'the same QEMU keeps running');
    assert.ok(sameProcess(readRecord(r.files.dir).owner, self));
    assert.ok(sameProcess(readRecord(r.files.dir).qemu, r.qemu));
  });

  it('reaps what fails a check: another shape, hot-plugged, not paused, agent silent, beyond the pool size', async () => {
    const deps = env();
    const d = deps.paths.runDir;
    const shape = fakeVm(d, 'shape', { spec: { ...SPEC, memoryMiB: SPEC.memoryMiB * 2 } });
    const grown = fakeVm(d, 'grown', { hotplug: { cpus: 1, memoryMiB: 0 } });
    const running = fakeVm(d, 'running', { createdAt: Date.now() + 3 });
    const mute = fakeVm(d, 'mute', { createdAt: Date.now() + 2 });
    const young = fakeVm(d, 'young', { createdAt: Date.now() + 4 });
    const old = fakeVm(d, 'old', { createdAt: Date.now() - 60_000 });
    const vms = new Map<string, FakeVm>();
    const res = await adoptIdleVms(deps, {
      accepts: sameSpec,
      limit: 3, // young, running, mute are the three youngest; old is beyond the pool size
      attach: async (rec) => {
        if (rec.id === 'running')
          throw new VmcError('VMC_ERR_INVALID_STATE', 'VM running is running, not paused');
        const vm = new FakeVm(rec);
        vms.set(rec.id, vm);
        return vm as unknown as Vm;
      },
      probe: async (vm) => {
        if (vm.id === 'mute') throw new VmcError('VMC_ERR_AGENT_TIMEOUT', 'guest agent not ready');
      },
    });
    assert.deepEqual(
      res.adopted.map((v) => v.id),
      ['young'],
    );
    const reasons = Object.fromEntries(res.reaped.map((x) => [x.id, x.reason]));
    assert.deepEqual(Object.keys(reasons).sort(), ['grown', 'mute', 'old', 'running', 'shape']);
    assert.equal(reasons.shape, 'not of the pool shape');
    assert.equal(reasons.grown, 'not of the pool shape');
    assert.equal(reasons.old, 'beyond the pool size');
    assert.match(reasons.running!, /not paused/);
    assert.match(reasons.mute!, /agent check failed/);
    assert.equal(vms.get('mute')!.destroyed, true);
    for (const r of [shape, grown, running, mute, old]) {
      assert.equal(isAlive(r.qemu), false, `${r.id} stopped`);
      assert.equal(existsSync(r.files.dir), false, `${r.id} state removed`);
    }
    assert.equal(isAlive(young.qemu), true);
  });

  it('never touches VMs handed out or owned: a live owner, a client (alive or dead), unowned, unmarked', async () => {
    const deps = env();
    const d = deps.paths.runDir;
    const keep = [
      fakeVm(d, 'live-server', { owner: self, pooledBy: self }),
      fakeVm(d, 'client-alive', { owner: liveProcess() }),
      fakeVm(d, 'client-dead', { owner: deadClient }), // the orphan sweep's, not adoption's
      fakeVm(d, 'kata-client', { owner: null }),
      fakeVm(d, 'booting', { pooledBy: null }),
    ];
    let attached = 0;
    const res = await adoptIdleVms(deps, {
      accepts: () => true,
      limit: 10,
      attach: async () => {
        attached++;
        throw new Error('not expected');
      },
    });
    assert.equal(attached, 0);
    assert.deepEqual(res, { adopted: [], reaped: [], left: [] });
    for (const r of keep) {
      assert.equal(isAlive(r.qemu), true, `${r.id} untouched`);
      assert.deepEqual(readRecord(r.files.dir), r);
    }
  });

  it('race with a client taking a VM handed out under a lease: whoever holds QMP first has it', async () => {
    const deps = env();
    const d = deps.paths.runDir;
    const client = liveProcess();
    // The client got QMP first and recorded itself: our attach times out on the greeting; left alone.
    const busy = fakeVm(d, 'busy');
    // The client recorded itself just before our attach got QMP (it let go of QMP): left alone, detached.
    const late = fakeVm(d, 'late');
    const vms = new Map<string, FakeVm>();
    const res = await adoptIdleVms(deps, {
      accepts: () => true,
      limit: 10,
      attach: async (rec) => {
        writeRecord({ ...rec, owner: client });
        if (rec.id === 'busy')
          throw new VmcError('VMC_ERR_QMP_TIMEOUT', 'no QMP greeting (another client may hold the monitor)');
        const vm = new FakeVm(rec);
        vms.set(rec.id, vm);
        return vm as unknown as Vm;
      },
      probe: async () => assert.fail('a VM someone took is not probed'),
    });
    assert.deepEqual(res.adopted, []);
    assert.deepEqual(res.reaped, []);
    assert.deepEqual(res.left.sort(), ['busy', 'late']);
    assert.equal(vms.get('late')!.detached, true);
    assert.equal(vms.get('late')!.destroyed, false);
    for (const r of [busy, late]) {
      assert.equal(isAlive(r.qemu), true);
      assert.ok(sameProcess(readRecord(r.files.dir).owner, client), 'the client stays the owner');
    }
  });

  /** A QMP monitor on `path` that answers query-status with `status`, or never greets (`null`). */
  function fakeQmp(path: string, status: string | null): void {
    const srv = createServer((sock) => {
      if (status === null) return; // holds the connection silently, as QEMU does while another client has it
      sock.write(
        '{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 8}}, "capabilities": []}}\n',
      );
      let buf = '';
      sock.on('data', (b) => {
        buf += b.toString();
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const m = JSON.parse(buf.slice(0, i)) as { execute: string; id?: string };
          buf = buf.slice(i + 1);
          const ret = m.execute === 'query-status' ? { status, running: status === 'running' } : {};
          sock.write(`${JSON.stringify({ return: ret, id: m.id })}\n`);
        }
      });
      sock.on('error', () => undefined);
    });
    srv.listen(path);
    servers.push(srv);
  }

  it('attaches over QMP: a paused VM is adopted, a running one and a silent monitor are reaped', async () => {
    const deps = env();
    const d = deps.paths.runDir;
    const paused = fakeVm(d, 'paused');
    const running = fakeVm(d, 'running');
    const silent = fakeVm(d, 'silent');
    fakeQmp(paused.files.qmpSocket, 'paused');
    fakeQmp(running.files.qmpSocket, 'running');
    fakeQmp(silent.files.qmpSocket, null);
    const res = await adoptIdleVms(deps, {
      accepts: () => true,
      limit: 10,
      qmpTimeoutMs: 300,
      probe: async () => {},
    });
    assert.deepEqual(
      res.adopted.map((v) => v.id),
      ['paused'],
    );
    const reasons = Object.fromEntries(res.reaped.map((x) => [x.id, x.reason]));
    assert.match(reasons.running!, /running, not paused/);
    assert.match(reasons.silent!, /QMP greeting/);
    assert.equal(isAlive(paused.qemu), true);
    assert.equal(isAlive(running.qemu), false);
    assert.equal(isAlive(silent.qemu), false);
    res.adopted[0]!.detach();
  });
});
