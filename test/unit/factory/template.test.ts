import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { createTemplate } from '../../../src/factory/template.js';
import type { DetachedSpawner } from '../../../src/hypervisor/qemu/launcher.js';
import { systemClock } from '../../../src/platform/clock.js';
import type { CommandRunner } from '../../../src/platform/command.js';
import { nullLogger } from '../../../src/platform/logger.js';

/** No QEMU: `mount` and `umount` are recorded, not run, and QEMU fails to start. */
describe('template creation', () => {
  const root = mkdtempSync(join(tmpdir(), 'vmc-template-'));
  after(() => rmSync(root, { recursive: true, force: true }));

  function deps(umountFails = false) {
    const calls: string[] = [];
    const run: CommandRunner = async (cmd, args) => {
      calls.push([cmd, ...args].join(' '));
      if (cmd === 'umount' && umountFails && !args.includes('-l')) throw new Error('umount: target is busy');
      return { stdout: Buffer.alloc(0), stderr: '' };
    };
    const spawner: DetachedSpawner = async () => {
      throw new Error('no QEMU here');
    };
    return {
      calls,
      deps: {
        paths: { runDir: root, imageDir: '/img', cacheDir: '/c' },
        clock: systemClock,
        logger: nullLogger,
        run,
        spawner,
      },
    };
  }

  it('unmounts the tmpfs it mounted when creating the template fails', async () => {
    const dir = join(root, 'a');
    const { calls, deps: d } = deps();
    await assert.rejects(createTemplate(defaultVmSpec('/img', 'tcg'), dir, d), /no QEMU here/);
    assert.equal(calls.length, 2);
    assert.match(calls[0]!, new RegExp(`^mount -t tmpfs .* vmcache-template ${dir}$`));
    assert.equal(calls[1], `umount ${dir}`);
  });

  it('detaches the tmpfs lazily when it is busy', async () => {
    const dir = join(root, 'b');
    const { calls, deps: d } = deps(true);
    await assert.rejects(createTemplate(defaultVmSpec('/img', 'tcg'), dir, d), /no QEMU here/);
    assert.deepEqual(calls.slice(1), [`umount ${dir}`, `umount -l ${dir}`]);
  });
});
