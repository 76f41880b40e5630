import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { resourceUpdate } from '../../../../src/cli/runtime/update.js';
import { isVmcError } from '../../../../src/errors.js';
import { parseControlRequest } from '../../../../src/protocol/control/messages.js';

const dir = mkdtempSync(join(tmpdir(), 'vmc-upd-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = (json: unknown) => {
  const p = join(dir, `${Math.random()}.json`);
  writeFileSync(p, JSON.stringify(json));
  return p;
};

describe("update: runc's flags and resources file", () => {
  it('reads the flags (bytes with k/m/g, -1 for no limit) over the file', () => {
    const warnings: string[] = [];
    const r = resourceUpdate(
      {
        resources: file({
          memory: { limit: 2 ** 30, reservation: 1 },
          cpu: { quota: 20_000, period: 100_000, shares: 2 },
          pids: { limit: -1 },
        }),
        memory: '512m',
        pidsLimit: '40',
      },
      (w) => warnings.push(w),
    );
    assert.deepEqual(r, { memory: 512 * 2 ** 20, cpuQuota: 20_000, cpuPeriod: 100_000, pids: 40 });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /not applied by vmcache .*: memory.reservation, cpu.shares$/);
    assert.deepEqual(
      resourceUpdate({ cpuQuota: '-1' }, () => {}),
      { cpuQuota: null },
    );
    // What the CLI sends passes the control channel's own check.
    assert.ok(parseControlRequest({ t: 'update', name: 'c1', resources: r }).ok);
  });

  it('refuses what the kernel would refuse, naming the flag or the JSON path', () => {
    const cases: Array<[Parameters<typeof resourceUpdate>[0], RegExp]> = [
      [{}, /update needs --memory/],
      [{ memory: '1k' }, /--memory must be from 4194304/],
      [{ memory: 'lots' }, /--memory must be an integer/],
      [{ cpuQuota: '10' }, /--cpu-quota must be from 1000/],
      [{ cpuQuota: '5k' }, /--cpu-quota must be an integer/],
      [{ cpuPeriod: '-1' }, /--cpu-period cannot be -1/],
      [{ pidsLimit: '0' }, /--pids-limit must be from 1/],
      [{ resources: file({ cpu: { quota: 10 } }) }, /cpu.quota must be from 1000/],
      [{ resources: file([]) }, /must be an object/],
      [{ resources: join(dir, 'none.json') }, /not a readable JSON file/],
    ];
    for (const [o, re] of cases)
      assert.throws(
        () => resourceUpdate(o, () => {}),
        (e) => isVmcError(e) && re.test(e.message),
        JSON.stringify(o),
      );
    for (const bad of [
      { t: 'update', name: 'c1', resources: { memory: 1 } },
      { t: 'update', name: 'c1', resources: { swap: 1 } },
      { t: 'update', name: '../x', resources: {} },
      { t: 'stats', name: '' },
    ])
      assert.equal(parseControlRequest(bad).ok, false, JSON.stringify(bad));
  });
});
