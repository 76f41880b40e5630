import assert from 'node:assert/strict';
import { statfsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { readBundle, type StatFs } from '../../../src/oci/bundle.js';
import { MAX_DEPTH } from '../../../src/oci/validate.js';
import { containerError } from '../../../src/protocol/agent/messages.js';
import { bundleDirs, minimalConfig } from '../../helpers/bundle-json.js';

/**
 * What fuzzing config.json through the CLI found: inputs that crashed (stack overflow, ENOENT as UNEXPECTED) or
 * that `create` accepted and only the guest refused at `start`. Each is refused by readBundle, naming the path.
 */

const fakeStatfs: StatFs = () => ({ bsize: 4096, blocks: 16 });
const base = minimalConfig;
const withProcess = (p: Record<string, unknown>) => ({ ...base(), process: { ...base().process, ...p } });
const withUser = (u: Record<string, unknown>) => withProcess({ user: { uid: 0, gid: 0, ...u } });
const withMounts = (mounts: unknown) => ({ ...base(), mounts });
const withResources = (resources: unknown) => ({ ...base(), linux: { resources } });
/** `d` arrays nested in one another, as JSON text (JSON.stringify could not make it). */
const nested = (d: number) => `${'['.repeat(d)}${']'.repeat(d)}`;

describe('config.json limits found by fuzzing, checked by readBundle (at create)', () => {
  const dirOf = bundleDirs('vmc-limits-');
  const read = (config: unknown, statfs = fakeStatfs) => readBundle(dirOf(JSON.stringify(config)), statfs);
  const refused = (dir: string, re: RegExp, statfs = fakeStatfs) =>
    assert.throws(
      () => readBundle(dir, statfs),
      (e) => {
        assert.ok(isVmcError(e, 'VMC_ERR_OCI_INVALID'), `expected VMC_ERR_OCI_INVALID, got ${e}`);
        assert.match(e.message, re);
        assert.ok(e.message.length < 1000, `a bounded message, got ${e.message.length} chars`);
        return true;
      },
    );
  const rejects = (config: unknown, re: RegExp, statfs = fakeStatfs) =>
    refused(dirOf(JSON.stringify(config)), re, statfs);

  it('refuses nesting deeper than 64 levels, naming where, wherever it is (no stack overflow)', () => {
    const doc = JSON.stringify(base());
    const deep = nested(100_000);
    refused(dirOf(`${doc.slice(0, -1)},"x":${deep}}`), /x(\[0\]){10}.* nests deeper than 64 levels/);
    refused(
      dirOf(doc.replace('["/bin/true"]', `["/bin/true",${deep}]`)),
      /process\.args\[1\](\[0\]){10}.* nests deeper than 64 levels/,
    );
    refused(
      dirOf(`${doc.slice(0, -1)},"annotations":{"a.b/c":${deep}}}`),
      /annotations\["a\.b\/c"\](\[0\]){10}.* nests deeper than 64 levels/,
    );
    // The root object is level 1: an unknown property nesting 63 more levels is accepted, 64 more is not.
    assert.equal(MAX_DEPTH, 64);
    const at = (d: number) => `${doc.slice(0, -1)},"x":${nested(d)}}`;
    assert.ok(readBundle(dirOf(at(MAX_DEPTH - 1)), fakeStatfs));
    refused(dirOf(at(MAX_DEPTH)), /nests deeper than 64 levels/);
  });

  it('never puts an unbounded value into a message', () => {
    const huge = 'k'.repeat(1_000_000);
    rejects({ ...base(), annotations: { [huge]: 1 } }, /annotations\.k+… must be a string, got 1$/);
    rejects(withProcess({ env: [huge] }), /process\.env\[0\] "k+… is not NAME=VALUE/);
  });

  it('refuses a bind-mounted /dev/shm whose source is missing, relative or absent', () => {
    const shm = (source?: string) => [
      {
        destination: '/dev/shm',
        type: 'bind',
        options: ['rbind'],
        ...(source === undefined ? {} : { source }),
      },
    ];
    const real: StatFs = (p) => statfsSync(p);
    const root = dirname(dirOf('{}'));
    rejects(withMounts(shm('relative/shm')), /mounts\[0\]\.source must be an absolute path/, real);
    rejects(withMounts(shm(join(root, 'no-such-shm'))), /mounts\[0\]\.source .*does not exist/, real);
    rejects(withMounts(shm()), /mounts\[0\]\.source must be an absolute path/, real);
    assert.ok(read(withMounts(shm(root)), real).shmSize > 0);
  });

  it('refuses a hostname that is not one', () => {
    rejects({ ...base(), hostname: 'a'.repeat(65) }, /hostname must be a host name of at most 64/);
    rejects({ ...base(), hostname: 'bad\nname' }, /hostname must be a host name/);
    rejects({ ...base(), hostname: 'no spaces' }, /hostname must be a host name/);
    rejects({ ...base(), hostname: 'nul\u0000' }, /hostname must be a host name/);
    for (const h of ['a'.repeat(64), 'web-1.example.org', 'pod_name', ''])
      assert.equal(read({ ...base(), hostname: h }).hostname, h);
  });

  it('refuses mount destinations, sources and options the guest helper cannot take', () => {
    const tmpfs = (m: Record<string, unknown>) => withMounts([{ destination: '/t', type: 'tmpfs', ...m }]);
    rejects(
      tmpfs({ destination: '/a/../../etc' }),
      /mounts\[0\]\.destination must be an absolute path without \.\./,
    );
    rejects(tmpfs({ destination: '/a\u0000b' }), /mounts\[0\]\.destination must be/);
    rejects(tmpfs({ destination: '/a\u001eb' }), /mounts\[0\]\.destination must be/);
    rejects(tmpfs({ source: 'tmp\u001ffs' }), /mounts\[0\]\.source must be a string without NUL/);
    rejects(
      tmpfs({ options: ['nosuid', 'size=1\u001f'] }),
      /mounts\[0\]\.options\[1\] must be a string without NUL/,
    );
    rejects(
      withMounts([{ destination: '/b', type: 'bind', source: '/a\u0000b' }]),
      /mounts\[0\]\.source must be a path without NUL/,
    );
    // A host path may hold the helper's separators: it is bound into the share under a safe name.
    const ok = read(
      withMounts([
        { destination: '/t', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755'] },
        { destination: '/b', type: 'bind', source: '/host/a\u001fb', options: ['rbind'] },
      ]),
    );
    assert.equal(ok.mounts.length, 2);
  });

  it('refuses NUL in process.args, process.env and process.cwd', () => {
    rejects(
      withProcess({ args: ['/bin/echo', 'a\u0000b'] }),
      /process\.args\[1\] must be a string without NUL/,
    );
    rejects(withProcess({ env: ['A=b\u0000c'] }), /process\.env\[0\] must be a string without NUL/);
    rejects(withProcess({ cwd: '/tmp\u0000' }), /process\.cwd must be an absolute path without NUL/);
    // argv and environment strings go to the helper whole: its separators may be in them.
    const c = read(withProcess({ args: ['/bin/echo', 'a\u001eb'], env: ['A=\u001f'] }));
    assert.deepEqual(c.process.args, ['/bin/echo', 'a\u001eb']);
  });

  it("refuses uid/gid 4294967295 ((uid_t)-1, the kernel's no id) and more than 64 additional groups", () => {
    rejects(withUser({ uid: 4294967295 }), /process\.user\.uid must be an integer from 0 to 4294967294/);
    rejects(withUser({ gid: 4294967295 }), /process\.user\.gid must be an integer from 0 to 4294967294/);
    rejects(withUser({ additionalGids: [1, 4294967295] }), /process\.user\.additionalGids\[1\] must be/);
    const max = read(withUser({ uid: 4294967294, gid: 4294967294 }));
    assert.deepEqual([max.process.uid, max.process.gid], [4294967294, 4294967294]);
    const gids = (k: number) => Array.from({ length: k }, (_, i) => i + 1);
    rejects(
      withUser({ additionalGids: gids(1000) }),
      /process\.user\.additionalGids must be at most 64 group ids .*got 1000/,
    );
    rejects(withUser({ additionalGids: gids(65) }), /additionalGids must be at most 64 group ids .*got 65/);
    assert.equal(read(withUser({ additionalGids: gids(64) })).process.additionalGids.length, 64);
    // The agent's own check agrees.
    assert.match(containerError({ root: 'c/rootfs', additionalGids: gids(65) }) ?? '', /additionalGids .*64/);
    assert.equal(containerError({ root: 'c/rootfs', additionalGids: gids(64) }), null);
  });

  it('refuses CPU quotas and periods cgroup v2 cpu.max does not take, and pids limits pids.max does not', () => {
    const cpu = (c: Record<string, unknown>) => withResources({ cpu: c });
    rejects(cpu({ quota: 999 }), /linux\.resources\.cpu\.quota must be from 1000 to 17592186044415/);
    rejects(cpu({ quota: 2 ** 44 }), /linux\.resources\.cpu\.quota must be from 1000/);
    rejects(cpu({ quota: 2 ** 60 }), /linux\.resources\.cpu\.quota must be/);
    rejects(
      cpu({ quota: 50_000, period: 999 }),
      /linux\.resources\.cpu\.period must be from 1000 to 1000000/,
    );
    rejects(cpu({ period: 1_000_001 }), /linux\.resources\.cpu\.period must be from 1000 to 1000000/);
    const ok = (c: Record<string, unknown>) => read(cpu(c)).resources;
    assert.deepEqual(ok({ quota: 1000, period: 1000 }), { cpuQuota: 1000, cpuPeriod: 1000 });
    assert.deepEqual(ok({ quota: 2 ** 44 - 1, period: 1_000_000 }), {
      cpuQuota: 2 ** 44 - 1,
      cpuPeriod: 1_000_000,
    });
    assert.deepEqual(ok({ quota: -1, period: 0 }), {}, '-1 and 0 mean none, as before');
    const pids = (limit: number) => withResources({ pids: { limit } });
    rejects(pids(4_194_305), /linux\.resources\.pids\.limit must be at most 4194304/);
    assert.deepEqual(read(pids(4_194_304)).resources, { pidsLimit: 4_194_304 });
    assert.deepEqual(read(pids(-1)).resources, {});
  });

  it('refuses more mounts, masked or read-only paths than the guest helper takes, and more hooks or sysctls', () => {
    const tmpfs = (k: number) =>
      Array.from({ length: k }, (_, i) => ({ destination: `/m${i}`, type: 'tmpfs', source: 'tmpfs' }));
    rejects(withMounts(tmpfs(129)), /mounts must be at most 128 mounts .*got 129/);
    assert.equal(read(withMounts(tmpfs(128))).mounts.length, 128);
    const paths = (k: number) => Array.from({ length: k }, (_, i) => `/p${i}`);
    rejects({ ...base(), linux: { maskedPaths: paths(257) } }, /linux\.maskedPaths must be at most 256/);
    rejects({ ...base(), linux: { readonlyPaths: paths(257) } }, /linux\.readonlyPaths must be at most 256/);
    assert.equal(read({ ...base(), linux: { maskedPaths: paths(256) } }).linux.maskedPaths.length, 256);
    const sysctl = (k: number) =>
      Object.fromEntries(Array.from({ length: k }, (_, i) => [`net.x.y${i}`, '1']));
    rejects({ ...base(), linux: { sysctl: sysctl(257) } }, /linux\.sysctl must be at most 256 sysctls/);
    assert.equal(Object.keys(read({ ...base(), linux: { sysctl: sysctl(256) } }).linux.sysctl).length, 256);
    const hooks = (k: number) => ({
      startContainer: Array.from({ length: k }, () => ({ path: '/bin/true' })),
    });
    rejects({ ...base(), hooks: hooks(33) }, /hooks\.startContainer must be at most 32 hooks/);
    assert.equal(read({ ...base(), hooks: hooks(32) }).hooks.startContainer.length, 32);
  });
});
