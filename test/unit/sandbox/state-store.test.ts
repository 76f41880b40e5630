import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { systemClock } from '../../../src/platform/clock.js';
import { identify } from '../../../src/platform/process.js';
import { type ContainerState, effectiveStatus, StateStore } from '../../../src/sandbox/state-store.js';

function state(id: string, over: Partial<ContainerState> = {}): ContainerState {
  return {
    version: 1,
    id,
    bundle: '/b',
    rootfs: '/b/rootfs',
    created: new Date(0).toISOString(),
    status: 'created',
    shim: identify(process.pid),
    vmId: null,
    exit: null,
    annotations: {},
    ...over,
  };
}

/** A process identity that is certainly dead: a child that has exited. */
function deadIdentity() {
  const r = spawnSync('/bin/true');
  return { pid: r.pid!, startTime: 1 };
}

describe('container state store', () => {
  const root = mkdtempSync('/tmp/vmc-store-');
  const store = new StateStore(root, systemClock);

  it('reserves an id once, atomically; a second reserve fails with CONTAINER_EXISTS', () => {
    store.reserve(state('a'));
    assert.equal(store.read('a').id, 'a');
    assert.throws(
      () => store.reserve(state('a')),
      (e) => isVmcError(e, 'VMC_ERR_CONTAINER_EXISTS'),
    );
    assert.deepEqual(store.list(), ['a']);
  });

  it('rejects ids runc rejects and reports unknown ids with CONTAINER_NOT_FOUND', () => {
    for (const bad of ['', '..', 'a/b', 'a b', 'é'])
      assert.throws(
        () => store.read(bad),
        (e) => isVmcError(e, 'VMC_ERR_CLI_USAGE'),
        bad,
      );
    assert.throws(
      () => store.read('ghost'),
      (e) => isVmcError(e, 'VMC_ERR_CONTAINER_NOT_FOUND'),
    );
  });

  it('derives stopped when the host-side process is gone, whatever was recorded', () => {
    assert.equal(effectiveStatus(state('x', { status: 'running' })), 'running');
    assert.equal(effectiveStatus(state('x', { status: 'running', shim: deadIdentity() })), 'stopped');
    assert.equal(effectiveStatus(state('x', { status: 'paused', shim: null })), 'stopped');
    assert.equal(effectiveStatus(state('x', { status: 'creating', shim: null })), 'creating');
  });

  it('serialises concurrent updates under the lock (no lost update)', async () => {
    store.reserve(state('n', { annotations: { n: '0' } }));
    await Promise.all(
      Array.from({ length: 20 }, () =>
        store.update('n', (s) => {
          s.annotations.n = String(Number(s.annotations.n) + 1);
        }),
      ),
    );
    assert.equal(store.read('n').annotations.n, '20');
  });

  it('takes over a lock whose holder died', async () => {
    store.reserve(state('l'));
    writeFileSync(join(store.containerDir('l'), 'lock'), JSON.stringify(deadIdentity()));
    const s = await store.update('l', (x) => {
      x.status = 'running';
    });
    assert.equal(s.status, 'running');
  });

  it('removes a container', () => {
    store.remove('a');
    assert.throws(
      () => store.read('a'),
      (e) => isVmcError(e, 'VMC_ERR_CONTAINER_NOT_FOUND'),
    );
    rmSync(root, { recursive: true, force: true });
  });
});
