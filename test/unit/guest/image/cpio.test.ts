import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { writeCpio } from '../../../../src/guest/image/cpio.js';

describe('cpio newc writer (checked with GNU cpio)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmc-cpio-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const archive = writeCpio([
    { kind: 'dir', path: 'bin' },
    { kind: 'file', path: '/bin/tool', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
    { kind: 'file', path: 'héllo-ünïcode.txt', data: Buffer.from('x') },
    { kind: 'symlink', path: 'bin/sh', target: 'tool' },
    { kind: 'dir', path: 'dev' },
    { kind: 'chardev', path: 'dev/console', major: 5, minor: 1 },
    { kind: 'file', path: 'empty', data: Buffer.alloc(0) },
  ]);
  const file = join(dir, 'a.cpio');
  writeFileSync(file, archive);

  it('lists every entry with its exact (UTF-8) name, type and device numbers', () => {
    const list = execFileSync('cpio', ['-itv', '--quiet', '-F', file]).toString();
    const names = list
      .trim()
      .split('\n')
      .map((l) => l.replace(/^.*\s\d{4}\s/, '').replace(/^.*\s\d\d:\d\d\s/, ''));
    assert.equal(names.length, 7);
    assert.match(list, /héllo-ünïcode\.txt/);
    assert.match(list, /^crw-------.*5,\s*1.*dev\/console$/m);
    assert.match(list, /^lrwxrwxrwx.*bin\/sh -> tool$/m);
    assert.match(list, /^-rwxr-xr-x.*bin\/tool$/m);
  });

  it('extracts to identical contents', () => {
    const out = join(dir, 'x');
    execFileSync('sh', [
      '-c',
      `mkdir -p ${out} && cd ${out} && cpio -id --quiet --no-absolute-filenames -F ${file} 2>/dev/null || true`,
    ]);
    assert.equal(readFileSync(join(out, 'bin/tool'), 'utf8'), '#!/bin/sh\necho hi\n');
    assert.equal(readlinkSync(join(out, 'bin/sh')), 'tool');
    assert.equal(readFileSync(join(out, 'héllo-ünïcode.txt'), 'utf8'), 'x');
  });

  it('pads every header+name and data to 4 bytes and ends with the trailer', () => {
    assert.equal(archive.length % 4, 0);
    assert.ok(archive.includes(Buffer.from('TRAILER!!!\0')));
  });

  it('rejects paths that escape the archive root', () => {
    assert.throws(() => writeCpio([{ kind: 'dir', path: '../etc' }]), /invalid cpio path/);
  });
});
