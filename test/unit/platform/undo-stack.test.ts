import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UndoStack } from '../../../src/platform/undo-stack.js';

describe('UndoStack', () => {
  it('undoes last first, waiting for each asynchronous step before the next', async () => {
    const done: string[] = [];
    const undo = new UndoStack();
    undo.push('remove dir', () => done.push('dir'));
    undo.push('kill QEMU', async () => {
      await new Promise((r) => setImmediate(r));
      done.push('qemu');
    });
    undo.push('close QMP', () => done.push('qmp'));
    assert.deepEqual(await undo.unwind(), []);
    assert.deepEqual(done, ['qmp', 'qemu', 'dir']);
  });

  it('runs every step even when some fail, and reports the failures by name in the order they ran', async () => {
    const done: string[] = [];
    const boom = new Error('boom');
    const undo = new UndoStack();
    undo.push('a', () => done.push('a'));
    undo.push('b', () => {
      throw boom;
    });
    undo.push('c', () => Promise.reject(new Error('async boom')));
    undo.push('d', () => done.push('d'));
    const failures = await undo.unwind();
    assert.deepEqual(done, ['d', 'a']);
    assert.deepEqual(
      failures.map((f) => f.name),
      ['c', 'b'],
    );
    assert.equal(failures[1]!.error, boom);
  });

  it('forgets its steps on release, and after an unwind: nothing is undone twice', async () => {
    let runs = 0;
    const undo = new UndoStack();
    undo.push('kept', () => runs++);
    undo.release();
    assert.deepEqual(await undo.unwind(), []);
    assert.equal(runs, 0, 'released work is owned elsewhere');
    undo.push('once', () => runs++);
    await undo.unwind();
    await undo.unwind();
    assert.equal(runs, 1);
  });

  it('takes new steps after a release, for the next piece of work', async () => {
    const done: string[] = [];
    const undo = new UndoStack();
    undo.push('old', () => done.push('old'));
    undo.release();
    undo.push('new', () => done.push('new'));
    await undo.unwind();
    assert.deepEqual(done, ['new']);
  });
});
