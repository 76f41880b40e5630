import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { assetAnnotations, containerType, sandboxId } from '../../../src/oci/annotations.js';
import { DEFAULT_SHM_SIZE, readBundle } from '../../../src/oci/bundle.js';
import { parseEnv } from '../../../src/oci/env.js';

const statfs = (p: string) =>
  p === '/dev/shm-of-pod' ? { bsize: 4096, blocks: 1024 } : { bsize: 4096, blocks: 0 };
const base = () => ({
  ociVersion: '1.0.2',
  root: { path: 'rootfs', readonly: true },
  process: {
    args: ['/bin/sh', '-c', 'echo hi'],
    env: ['PATH=/bin'],
    cwd: '/',
    user: { uid: 1000, gid: 1000 },
    terminal: false,
  },
  hostname: 'box',
  unknownTopLevel: { ignored: true },
});

describe('OCI bundle parsing', () => {
  const root = mkdtempSync(join(tmpdir(), 'vmc-oci-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  let n = 0;
  function bundle(config: unknown, opts: { rootfs?: boolean; raw?: string } = {}): string {
    const dir = join(root, `b${n++}`);
    mkdirSync(dir);
    if (opts.rootfs !== false) mkdirSync(join(dir, 'rootfs'));
    writeFileSync(join(dir, 'config.json'), opts.raw ?? JSON.stringify(config));
    return dir;
  }
  const rejects = (config: unknown, re: RegExp, code = 'VMC_ERR_OCI_INVALID', opts = {}) =>
    assert.throws(
      () => readBundle(bundle(config, opts), statfs),
      (e) => isVmcError(e, code as 'VMC_ERR_OCI_INVALID') && re.test(e.message),
    );

  it('reads the honoured subset and ignores unknown properties', () => {
    const c = readBundle(bundle(base()), statfs);
    assert.deepEqual(c.process.args, ['/bin/sh', '-c', 'echo hi']);
    assert.deepEqual(c.process.env, [{ name: 'PATH', value: '/bin' }]);
    assert.equal(c.process.uid, 1000);
    assert.equal(c.rootfsReadonly, true);
    assert.ok(c.rootfs.endsWith('/rootfs'));
    assert.equal(c.hostname, 'box');
    assert.equal(c.containerType, 'sandbox');
    assert.equal(c.shmSize, DEFAULT_SHM_SIZE);
    assert.deepEqual(
      (c.spec as { unknownTopLevel: unknown }).unknownTopLevel,
      { ignored: true },
      'the spec is kept as read',
    );
  });

  it('reads rc4 capabilities (a list for all five sets) and rc5 ones (an object per set)', () => {
    const rc4 = readBundle(
      bundle({ ...base(), process: { ...base().process, capabilities: ['CAP_CHOWN', 'CAP_KILL'] } }),
      statfs,
    );
    for (const set of ['bounding', 'effective', 'inheritable', 'permitted', 'ambient'] as const) {
      assert.deepEqual(rc4.process.capabilities![set], ['CAP_CHOWN', 'CAP_KILL']);
    }
    const rc5 = readBundle(
      bundle({
        ...base(),
        process: {
          ...base().process,
          capabilities: { bounding: ['CAP_KILL'], effective: ['CAP_KILL', 'CAP_CHOWN'] },
        },
      }),
      statfs,
    );
    assert.deepEqual(rc5.process.capabilities, {
      bounding: ['CAP_KILL'],
      effective: ['CAP_KILL', 'CAP_CHOWN'],
      inheritable: [],
      permitted: [],
      ambient: [],
    });
    rejects(
      { ...base(), process: { ...base().process, capabilities: ['chown'] } },
      /process\.capabilities\[0\] must be a capability name/,
    );
    rejects(
      { ...base(), process: { ...base().process, capabilities: { bounding: 'CAP_KILL' } } },
      /process\.capabilities\.bounding must be an array/,
    );
  });

  it('splits env at the first = and trims quotes and spaces', () => {
    assert.deepEqual(parseEnv(['A=b=c', ' B = "quoted value" ', "C='x'", 'D='], 'f'), [
      { name: 'A', value: 'b=c' },
      { name: 'B', value: 'quoted value' },
      { name: 'C', value: 'x' },
      { name: 'D', value: '' },
    ]);
    assert.throws(() => parseEnv(['=x'], 'f'), /process\.env\[0\] "=x" has an empty name/);
    assert.throws(() => parseEnv(['NOEQUALS'], 'f'), /process\.env\[0\] "NOEQUALS" is not NAME=VALUE/);
  });

  it('accepts device types c, b, u, p only, with a path', () => {
    const devs = [
      { path: '/dev/fuse', type: 'c', major: 10, minor: 229, fileMode: 0o666 },
      { path: '/dev/sdz', type: 'b', major: 8, minor: 0 },
      { path: '/dev/fifo', type: 'p' },
    ];
    const c = readBundle(bundle({ ...base(), linux: { devices: devs } }), statfs);
    assert.equal(c.devices.length, 3);
    assert.equal(c.devices[0]!.fileMode, 0o666);
    rejects(
      { ...base(), linux: { devices: [{ path: '/dev/x', type: 'x', major: 1, minor: 1 }] } },
      /linux\.devices\[0\]\.type must be one of c, b, u, p/,
    );
    rejects(
      { ...base(), linux: { devices: [{ type: 'c', major: 1, minor: 1 }] } },
      /linux\.devices\[0\]\.path must be a string/,
    );
    rejects(
      { ...base(), linux: { devices: [{ path: '/dev/x', type: 'c' }] } },
      /linux\.devices\[0\]\.major must be an integer/,
    );
  });

  it('sizes /dev/shm from a bind-mounted source, 64 MiB otherwise', () => {
    const m = [{ destination: '/dev/shm', type: 'bind', source: '/dev/shm-of-pod', options: ['rbind'] }];
    assert.equal(readBundle(bundle({ ...base(), mounts: m }), statfs).shmSize, 4096 * 1024);
    const tmpfs = [{ destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['size=65536k'] }];
    assert.equal(readBundle(bundle({ ...base(), mounts: tmpfs }), statfs).shmSize, DEFAULT_SHM_SIZE);
    rejects(
      { ...base(), mounts: [{ destination: 'relative' }] },
      /mounts\[0\]\.destination must be an absolute path/,
    );
  });

  it("reads the container type and sandbox id from CRI annotations in Kata's order", () => {
    assert.equal(containerType({}, 'f'), 'sandbox');
    assert.equal(containerType({ 'io.kubernetes.cri.container-type': 'container' }, 'f'), 'container');
    assert.equal(containerType({ 'io.kubernetes.cri-o.ContainerType': 'sandbox' }, 'f'), 'sandbox');
    assert.equal(containerType({ 'io.kubernetes.docker.type': 'podsandbox' }, 'f'), 'sandbox');
    assert.equal(containerType({ 'io.kubernetes.docker.type': 'container' }, 'f'), 'container');
    // The first key present decides.
    assert.equal(
      containerType(
        { 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.docker.type': 'container' },
        'f',
      ),
      'sandbox',
    );
    assert.throws(
      () => containerType({ 'io.kubernetes.cri-o.ContainerType': 'pod' }, 'f'),
      /io\.kubernetes\.cri-o\.ContainerType.*must be one of sandbox, container, got "pod"/,
    );
    assert.throws(
      () => containerType({ 'io.kubernetes.docker.type': 'sandbox' }, 'f'),
      /must be one of podsandbox, container/,
    );
    assert.equal(sandboxId({ 'io.kubernetes.cri.sandbox-id': 'a', 'io.kubernetes.sandbox.id': 'c' }), 'a');
    assert.equal(sandboxId({ 'io.kubernetes.cri-o.SandboxID': 'b' }), 'b');
    assert.equal(sandboxId({ 'io.kubernetes.sandbox.id': 'c' }), 'c');
    assert.equal(sandboxId({}), undefined);
    const c = readBundle(
      bundle({
        ...base(),
        annotations: {
          'io.kubernetes.cri.container-type': 'container',
          'io.kubernetes.cri.sandbox-id': 'pod1',
        },
      }),
      statfs,
    );
    assert.deepEqual([c.containerType, c.sandboxId], ['container', 'pod1']);
    rejects(
      { ...base(), annotations: { 'io.kubernetes.cri.container-type': 'container' } },
      /needs a sandbox id annotation/,
    );
    rejects({ ...base(), annotations: { key: 42 } }, /annotations\.key must be a string/);
  });

  it('carries Kata asset annotations (path and hash) into the config', () => {
    const h = 'a'.repeat(64);
    assert.deepEqual(
      assetAnnotations(
        {
          'io.katacontainers.config.hypervisor.kernel': '/k',
          'io.katacontainers.config.hypervisor.kernel_hash': h,
        },
        'f',
      ),
      { kernel: { path: '/k', hash: h } },
    );
    assert.throws(
      () => assetAnnotations({ 'io.katacontainers.config.hypervisor.image': 'rel' }, 'f'),
      /must be an absolute path/,
    );
    assert.throws(
      () => assetAnnotations({ 'io.katacontainers.config.hypervisor.initrd_hash': h }, 'f'),
      /given without/,
    );
  });

  it('rejects bad bundles with clear errors naming the path', () => {
    assert.throws(
      () => readBundle(join(root, 'nope'), statfs),
      (e) => isVmcError(e, 'VMC_ERR_OCI_BUNDLE') && /is not a directory/.test(e.message),
    );
    const empty = join(root, 'empty');
    mkdirSync(empty);
    assert.throws(() => readBundle(empty, statfs), /has no readable config\.json/);
    rejects(null, /not valid JSON/, 'VMC_ERR_OCI_INVALID', { raw: '{ nope' });
    rejects(base(), /root\.path .* is not a directory/, 'VMC_ERR_OCI_BUNDLE', { rootfs: false });
    rejects({ ...base(), ociVersion: undefined }, /ociVersion must be a string, got nothing/);
    rejects(
      { ...base(), process: { ...base().process, args: [] } },
      /process\.args must be a non-empty array/,
    );
    rejects(
      { ...base(), process: { ...base().process, cwd: 'tmp' } },
      /process\.cwd must be an absolute path/,
    );
    rejects(
      { ...base(), process: { ...base().process, user: { uid: -1, gid: 0 } } },
      /process\.user\.uid must be an integer from 0/,
    );
    rejects({ ...base(), process: { ...base().process, env: 'A=b' } }, /process\.env must be an array/);
    rejects(
      { ...base(), process: { ...base().process, terminal: 'yes' } },
      /process\.terminal must be true or false/,
    );
  });
});
