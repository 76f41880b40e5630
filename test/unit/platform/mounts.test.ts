import assert from 'node:assert/strict';
import {
  mkdirSync,
  mkdtempSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import type { CommandRunner } from '../../../src/platform/command.js';
import { bindBeneath, mountsUnder } from '../../../src/platform/mounts.js';

/** A CommandRunner that records where `mount` would mount: the directory the /proc fd target resolves to. */
function recorder() {
  const targets: string[] = [];
  const run: CommandRunner = async (cmd, args) => {
    assert.equal(cmd, 'mount');
    assert.deepEqual(args.slice(0, 2), ['--no-canonicalize', '--rbind']);
    // Resolved while the descriptor is still open, as mount(2) would.
    targets.push(readlinkSync(args[3]!));
    return { stdout: Buffer.alloc(0), stderr: '' };
  };
  return { run, targets };
}

describe('bindBeneath (host mounts into a share the guest can write)', () => {
  const root = mkdtempSync(join(tmpdir(), 'vmc-beneath-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  const share = join(root, 'share');
  const outside = join(root, 'outside');
  mkdirSync(share);
  mkdirSync(outside);
  const srcDir = join(root, 'src-dir');
  mkdirSync(srcDir);
  const srcFile = join(root, 'src-file');
  writeFileSync(srcFile, 'x');

  it('creates the mount point and its parents and mounts onto the opened directory or file', async () => {
    const { run, targets } = recorder();
    await bindBeneath(run, srcDir, share, 'c1/rootfs');
    await bindBeneath(run, srcFile, share, 'c1/mounts/0/hosts');
    assert.deepEqual(targets, [
      realpathSync(join(share, 'c1/rootfs')),
      realpathSync(join(share, 'c1/mounts/0/hosts')),
    ]);
  });

  it('refuses a symlink planted at any component, mounting nothing and creating nothing outside', async () => {
    symlinkSync(outside, join(share, 'm1'));
    const { run, targets } = recorder();
    await assert.rejects(
      bindBeneath(run, srcDir, share, 'm1/rootfs'),
      (e) => isVmcError(e, 'VMC_ERR_CONTAINER_START') && e.message.includes(`${share}/m1: it is a symlink`),
    );
    mkdirSync(join(share, 'm2'));
    symlinkSync(outside, join(share, 'm2', 'rootfs'));
    await assert.rejects(bindBeneath(run, srcDir, share, 'm2/rootfs'), /m2\/rootfs: it is a symlink/);
    symlinkSync(join(outside, 'f'), join(share, 'm2', 'file'));
    await assert.rejects(
      bindBeneath(run, srcFile, share, 'm2/file'),
      /m2\/file: it is a symlink or not a file/,
    );
    assert.deepEqual(targets, []);
    assert.deepEqual(mountsUnder(outside), []);
    await assert.rejects(bindBeneath(run, srcDir, share, '../escape'), /bad mount point/);
  });
});
