import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, describe, it } from 'node:test';
import { isAlive, readProcStat } from '../../src/platform/process.js';
import { encodeFrame } from '../../src/protocol/agent/framing.js';
import { readRecord } from '../../src/vm/record.js';
import { Vm } from '../../src/vm/vm.js';
import { REPO, run } from '../helpers/cli.js';
import { IMAGE_DIR, vmDirsLeft, vmEnv } from '../helpers/vm-env.js';

/** The VM is handed between three host processes: A boots it, B drives it, this test process ends it. */
describe('hand-off of a running VM between host processes', () => {
  const env = vmEnv();
  const toolEnv = { ...process.env, VMCACHE_RUN_DIR: env.runDir, VMCACHE_IMAGE_DIR: IMAGE_DIR };
  const tool = `${REPO}dist/test/fixtures/vm-tool.js`;
  let id = '';
  after(async () => {
    if (id)
      await Vm.attach(id, env.deps).then(
        (vm) => vm.destroy(),
        () => undefined,
      );
    env.cleanup();
  });

  it('the VM outlives the process that booted it', async () => {
    const a = await run(process.execPath, [tool, 'boot'], toolEnv);
    assert.equal(a.code, 0, a.stderr);
    id = a.stdout.trim();
    const rec = readRecord(`${env.runDir}/vm/${id}`);
    assert.ok(isAlive(rec.qemu), 'QEMU died with its launcher');
    assert.equal(rec.owner, null, 'a released VM is recorded as unowned');
    assert.notEqual(readProcStat(rec.qemu.pid)?.ppid, process.pid);
  });

  it('a second process takes it over and runs a command in it', async () => {
    const b = await run(
      process.execPath,
      [tool, 'run', id, 'sh', '-c', 'echo from-b; cat /proc/sys/kernel/random/boot_id'],
      toolEnv,
    );
    assert.equal(b.code, 0, b.stderr);
    const [line, bootId] = b.stdout.trim().split('\n');
    assert.equal(line, 'from-b');
    const vm = await Vm.attach(id, env.deps, { takeOwnership: true });
    const info = await vm.agent.request<{ bootId: string }>({ op: 'info' });
    assert.equal(info.bootId, bootId, 'the same guest answered both owners');
    assert.equal(readRecord(vm.record.files.dir).owner?.pid, process.pid);
    vm.detach();
  });

  it('garbage and a half-written frame from a departed owner do not break the agent', async () => {
    const sockPath = readRecord(`${env.runDir}/vm/${id}`).files.agentSocket;
    await new Promise<void>((resolve, reject) => {
      const s = connect(sockPath, () => {
        const frame = encodeFrame({ t: 'req', id: 1, op: 'ping' });
        s.write(Buffer.concat([Buffer.from('\x00\xffgarbage'), frame.subarray(0, 10)]));
        s.end(resolve);
      });
      s.on('error', reject);
    });
    const vm = await Vm.attach(id, env.deps, { takeOwnership: true });
    assert.deepEqual(await vm.agent.request({ op: 'ping' }), { pong: true });
    assert.equal((await vm.run(['echo', 'still-here'])).stdout.toString(), 'still-here\n');
    await vm.destroy();
    assert.deepEqual(vmDirsLeft(env.runDir), []);
    id = '';
  });
});
