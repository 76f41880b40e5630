import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { produceFileAtomic, writeFileAtomic } from '../../../src/platform/atomic-write.js';

describe('atomic write', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmc-atomic-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('replaces a file whole, with the mode asked for, and leaves no temporary file', () => {
    const f = join(dir, 'state.json');
    writeFileSync(f, 'old');
    writeFileAtomic(f, 'new', { mode: 0o600 });
    assert.equal(readFileSync(f, 'utf8'), 'new');
    writeFileAtomic(join(dir, 'fresh'), Buffer.from('x'), { mode: 0o600 });
    assert.equal(statSync(join(dir, 'fresh')).mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(dir).sort(), ['fresh', 'state.json']);
  });

  it('keeps the old content and removes the temporary file when the write fails', () => {
    assert.throws(() => writeFileAtomic(join(dir, 'no/such/dir/f'), 'x'), { code: 'ENOENT' });
    assert.deepEqual(readdirSync(dir).sort(), ['fresh', 'state.json']);
  });

  it('renames what a tool produced, and removes its output when it fails', async () => {
    const f = join(dir, 'disk.img');
    await produceFileAtomic(f, async (tmp) => writeFileSync(tmp, 'disk'));
    assert.equal(readFileSync(f, 'utf8'), 'disk');
    await assert.rejects(
      produceFileAtomic(f, async (tmp) => {
        writeFileSync(tmp, 'half');
        throw new Error('mkfs failed');
      }),
      /mkfs failed/,
    );
    assert.equal(readFileSync(f, 'utf8'), 'disk');
    assert.deepEqual(readdirSync(dir).sort(), ['disk.img', 'fresh', 'state.json']);
  });
});
