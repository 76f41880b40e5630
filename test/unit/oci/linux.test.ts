import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { readBundle } from '../../../src/oci/bundle.js';
import { RLIMITS, sysctlNamespace } from '../../../src/oci/linux.js';
import { containerError } from '../../../src/protocol/agent/messages.js';
import { containerExecOf } from '../../../src/sandbox/process.js';
import { bundleDirs, minimalConfig } from '../../helpers/bundle-json.js';

const statfs = () => ({ bsize: 4096, blocks: 0 });
/** Namespace files as a fake kernel names them: `/ns/<kind>/…` is a namespace of that kind. */
const kindOf = (p: string) =>
  /^\/proc\/\d+\/ns\/([a-z]+)$/.exec(p)?.[1] ?? /^\/ns\/([a-z]+)/.exec(p)?.[1] ?? null;
const base = minimalConfig;

describe('OCI spec fields applied in the guest or refused (linux.*, process.rlimits)', () => {
  const dirOf = bundleDirs('vmc-linux-');
  const read = (config: unknown) => readBundle(dirOf(JSON.stringify(config)), statfs, kindOf);
  const rejects = (config: unknown, re: RegExp) =>
    assert.throws(
      () => read(config),
      (e) => isVmcError(e, 'VMC_ERR_OCI_INVALID') && re.test(e.message),
    );
  const withLinux = (linux: unknown) => ({ ...base(), linux });
  const withProcess = (p: Record<string, unknown>) => ({ ...base(), process: { ...base().process, ...p } });

  it('reads masked and read-only paths, sysctls, root propagation, rlimits and the OOM score', () => {
    const c = read({
      ...withLinux({
        maskedPaths: ['/proc/kcore'],
        readonlyPaths: ['/proc/sys'],
        sysctl: { 'net.ipv4.ip_forward': '1', 'kernel.shmmax': '65536' },
        rootfsPropagation: 'rslave',
      }),
      process: {
        ...base().process,
        rlimits: [
          { type: 'RLIMIT_NOFILE', soft: 512, hard: 1024 },
          { type: 'RLIMIT_CORE', soft: 2 ** 64 - 1, hard: 2 ** 64 - 1 },
        ],
        oomScoreAdj: 500,
      },
      domainname: 'example.org',
    });
    assert.deepEqual(c.linux.maskedPaths, ['/proc/kcore']);
    assert.deepEqual(c.linux.readonlyPaths, ['/proc/sys']);
    assert.deepEqual(
      { ...c.linux.sysctl },
      { 'net.ipv4.ip_forward': '1', 'kernel.shmmax': '65536', 'kernel.domainname': 'example.org' },
    );
    assert.equal(c.linux.rootfsPropagation, (1 << 19) | 16384);
    assert.deepEqual(c.linux.rlimits, [
      { type: 'RLIMIT_NOFILE', soft: 512, hard: 1024 },
      { type: 'RLIMIT_CORE', soft: null, hard: null },
    ]);
    assert.equal(c.linux.oomScoreAdj, 500);
    // ...and all of it reaches the guest's helper through the exec request, which the guest validates.
    const x = containerExecOf('c1', c, [], undefined, 42);
    assert.deepEqual(x.rlimits, [
      { resource: RLIMITS.RLIMIT_NOFILE, soft: 512, hard: 1024 },
      { resource: RLIMITS.RLIMIT_CORE, soft: null, hard: null },
    ]);
    assert.equal(x.oomScoreAdj, 500);
    assert.deepEqual(x.maskedPaths, ['/proc/kcore']);
    assert.equal(x.propagation, (1 << 19) | 16384);
    assert.equal(containerError(x), null);
    // An exec joining the container keeps the per-process limits.
    assert.deepEqual(containerExecOf('c1', c, [], 7).rlimits, x.rlimits);
  });

  it('tells namespaced sysctls from the ones that would change the whole guest', () => {
    assert.equal(sysctlNamespace('kernel.msgmax'), 'ipc');
    assert.equal(sysctlNamespace('fs.mqueue.queues_max'), 'ipc');
    assert.equal(sysctlNamespace('kernel.hostname'), 'uts');
    assert.equal(sysctlNamespace('net.core.somaxconn'), 'net');
    assert.equal(sysctlNamespace('vm.swappiness'), null);
    assert.equal(sysctlNamespace('kernel.pid_max'), null);
    rejects(
      withLinux({ sysctl: { 'vm.swappiness': '10' } }),
      /linux\.sysctl\.vm\.swappiness must be a namespaced sysctl/,
    );
    rejects(withLinux({ sysctl: { '../../etc': '1' } }), /must be set under a sysctl name/);
    rejects(withLinux({ sysctl: { 'net.ipv4.ip_forward': 'a\nb' } }), /single-line value/);
  });

  it('refuses unknown rlimits, soft above hard, and bad OOM scores, naming the path', () => {
    rejects(
      withProcess({ rlimits: [{ type: 'RLIMIT_BOGUS', soft: 1, hard: 1 }] }),
      /process\.rlimits\[0\]\.type must be one of RLIMIT_CPU/,
    );
    rejects(
      withProcess({ rlimits: [{ type: 'RLIMIT_NOFILE', soft: 9, hard: 8 }] }),
      /process\.rlimits\[0\]\.soft must be at most hard \(8\)/,
    );
    rejects(
      withProcess({
        rlimits: [
          { type: 'RLIMIT_NOFILE', soft: 1, hard: 1 },
          { type: 'RLIMIT_NOFILE', soft: 1, hard: 1 },
        ],
      }),
      /given twice/,
    );
    rejects(withProcess({ oomScoreAdj: 1001 }), /process\.oomScoreAdj must be an integer from -1000 to 1000/);
    rejects(withLinux({ rootfsPropagation: 'sideways' }), /linux\.rootfsPropagation must be one of private/);
    rejects(
      withLinux({ maskedPaths: ['/proc/../etc'] }),
      /linux\.maskedPaths\[0\] must be an absolute path without \.\./,
    );
  });

  it('checks namespace paths against their type and refuses user and time namespaces and id mappings', () => {
    const c = read(
      withLinux({
        namespaces: [
          { type: 'network', path: '/ns/net/pod' },
          { type: 'ipc', path: '/proc/9/ns/ipc' },
        ],
      }),
    );
    assert.equal(c.netns, '/ns/net/pod');
    assert.deepEqual(c.linux.namespacePaths, [
      { type: 'ipc', path: '/proc/9/ns/ipc', at: 'linux.namespaces[1].path' },
    ]);
    rejects(
      withLinux({ namespaces: [{ type: 'cgroup', path: '/proc/9/ns/ipc' }] }),
      /linux\.namespaces\[0\]\.path must be a cgroup namespace \(\/proc\/PID\/ns\/cgroup\), not a ipc one/,
    );
    rejects(
      withLinux({ namespaces: [{ type: 'ipc', path: '/etc/passwd' }] }),
      /must be a readable namespace file/,
    );
    rejects(withLinux({ namespaces: [{ type: 'user' }] }), /user namespaces are not supported/);
    rejects(withLinux({ namespaces: [{ type: 'time' }] }), /time namespaces are not supported/);
    rejects(withLinux({ namespaces: [{ type: 'ipc' }, { type: 'ipc' }] }), /given twice/);
    rejects(
      withLinux({ uidMappings: [{ containerID: 0, hostID: 1000, size: 1 }] }),
      /linux\.uidMappings must be empty: user namespaces/,
    );
  });
});
