import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { systemClock } from '../../../src/platform/clock.js';
import { type Logger, nullLogger } from '../../../src/platform/logger.js';
import { KILLABLE, ShimLifecycle } from '../../../src/sandbox/lifecycle.js';
import { StateStore } from '../../../src/sandbox/state-store.js';

function setup(id: string) {
  const root = mkdtempSync('/tmp/vmc-life-');
  const store = new StateStore(root, systemClock);
  store.reserve({
    version: 1,
    id,
    bundle: '/b',
    rootfs: '/b/rootfs',
    created: new Date(0).toISOString(),
    status: 'creating',
    shim: null,
    vmId: null,
    exit: null,
    annotations: {},
  });
  const logged: Array<Record<string, unknown>> = [];
  const logger: Logger = { ...nullLogger, debug: (o) => void logged.push(o) };
  return { root, store, logged, life: new ShimLifecycle(id, { store, logger }) };
}

describe('shim life cycle (guarded transitions)', () => {
  it('records and logs each transition: creating → created → running ⇄ paused → stopped', async () => {
    const { root, store, logged, life } = setup('c1');
    assert.equal(life.status, 'creating');
    await life.created('vm1');
    assert.equal(store.read('c1').status, 'created');
    assert.equal(store.read('c1').vmId, 'vm1');
    assert.equal(store.read('c1').shim?.pid, process.pid);
    await life.transition('start', ['created'], 'running');
    await life.transition('pause', ['running'], 'paused');
    assert.equal(store.read('c1').status, 'paused');
    await life.transition('resume', ['paused'], 'running');
    assert.equal(life.stop(), true);
    assert.equal(life.status, 'stopped');
    // The record follows once the shim has cleaned up.
    assert.equal(store.read('c1').status, 'running');
    await life.recordStopped({ code: 3, signal: null });
    assert.equal(store.read('c1').status, 'stopped');
    assert.deepEqual(store.read('c1').exit, { code: 3, signal: null });
    assert.deepEqual(
      logged.map((o) => `${o.from}→${o.to}`),
      ['creating→created', 'created→running', 'running→paused', 'paused→running', 'running→stopped'],
    );
    rmSync(root, { recursive: true, force: true });
  });

  it('refuses an illegal transition with VMC_ERR_INVALID_STATE naming the state needed, changing nothing', async () => {
    const { root, store, life } = setup('c2');
    await life.created('vm1');
    await assert.rejects(
      life.transition('pause', ['running'], 'paused'),
      (e) =>
        isVmcError(e, 'VMC_ERR_INVALID_STATE') &&
        /container c2 is created, pause needs running/.test(e.message),
    );
    assert.equal(life.status, 'created');
    assert.equal(store.read('c2').status, 'created');
    assert.throws(
      () => life.need('exec', ['running']),
      (e) => isVmcError(e, 'VMC_ERR_INVALID_STATE') && /is created, exec needs running/.test(e.message),
    );
    rmSync(root, { recursive: true, force: true });
  });

  it('stops once, and then refuses what needs a live container with the message given', () => {
    const { root, life } = setup('c3');
    assert.equal(life.stop(), true);
    assert.equal(life.stop(), false);
    assert.throws(
      () => life.need('kill', KILLABLE, 'container c3 is not running'),
      (e) => isVmcError(e, 'VMC_ERR_INVALID_STATE') && e.message === 'container c3 is not running',
    );
    rmSync(root, { recursive: true, force: true });
  });
});
