import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { systemClock } from '../../../src/platform/clock.js';
import { withPidLock } from '../../../src/platform/pid-lock.js';
import { identify } from '../../../src/platform/process.js';

const dir = mkdtempSync(join(tmpdir(), 'vmc-lock-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('withPidLock (one holder across processes)', () => {
  it('takes over the lock of an owner that died, releases it on failure, and times out naming a live owner', async () => {
    const templatePath = join(dir, 'template');
    // A pid that is not running (its start time does not match): the lock is stale.
    writeFileSync(`${templatePath}.lock`, JSON.stringify({ pid: process.pid, startTime: 1 }));
    const started = performance.now();
    await assert.rejects(
      withPidLock(`${templatePath}.lock`, systemClock, 60_000, async () => {
        assert.deepEqual(JSON.parse(readFileSync(`${templatePath}.lock`, 'utf8')), identify(process.pid));
        throw new Error('inside');
      }),
      /inside/,
    );
    assert.ok(performance.now() - started < 2_000);
    assert.equal(existsSync(`${templatePath}.lock`), false, 'released on failure too');
    writeFileSync(`${templatePath}.lock`, JSON.stringify(identify(process.pid)));
    await assert.rejects(
      withPidLock(`${templatePath}.lock`, systemClock, 300, async () => 1),
      (e) => isVmcError(e, 'VMC_ERR_LOCK_TIMEOUT') && /held by pid \d+/.test(e.message),
    );
  });
});
