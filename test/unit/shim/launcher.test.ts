import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  SANDBOX_ID_ANNOTATION,
  SHIM_SOCKET_DIR,
  socketAddress,
  socketPathOf,
} from '../../../src/cli/shim-v2/socket-address.js';
import { REPO } from '../../helpers/cli.js';

const LAUNCHER = join(REPO, 'bin/containerd-shim-vmcache-v2');

/**
 * The launcher's `start` fast path for a pod member (a shell copy of the socket address rule, to spare a Node
 * start): it must answer what the Node `start` would, and leave everything else to Node.
 */
describe('bin/containerd-shim-vmcache-v2: the start fast path for pod members', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmc-launcher-'));
  const ns = `vmclaunch${process.pid}`;
  const addr = '/run/containerd/containerd.sock';
  const sid = `sb${process.pid}`;
  // A stand-in for Node: says it ran, so a test sees which way the launcher went.
  const fakeNode = join(dir, 'node');
  const sock = socketPathOf(socketAddress(addr, ns, sid));
  let server: Server;

  before(async () => {
    writeFileSync(fakeNode, '#!/bin/sh\necho NODE\n');
    chmodSync(fakeNode, 0o755);
    mkdirSync(SHIM_SOCKET_DIR, { recursive: true });
    server = createServer();
    await new Promise<void>((r) => server.listen(sock, r));
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A bundle `id` of the pod `sid` in a containerd-like state dir, and the sandbox's with `daemonPid`. */
  const bundle = (id: string, daemonPid: number, podSid = sid) => {
    const b = join(dir, 'state', ns, id);
    mkdirSync(b, { recursive: true });
    writeFileSync(
      join(b, 'config.json'),
      JSON.stringify({ annotations: { [SANDBOX_ID_ANNOTATION]: podSid } }),
    );
    mkdirSync(join(dir, 'state', ns, podSid), { recursive: true });
    writeFileSync(join(dir, 'state', ns, podSid, 'shim.pid'), String(daemonPid));
    return b;
  };
  const start = (cwd: string, id: string) =>
    spawnSync(
      LAUNCHER,
      ['-namespace', ns, '-address', addr, '-publish-binary', '/bin/true', '-id', id, 'start'],
      {
        cwd,
        env: { ...process.env, VMCACHE_NODE: fakeNode },
        encoding: 'utf8',
        input: '',
      },
    );

  it("a member whose pod's daemon lives gets the daemon's address, as the Node start computes it", () => {
    const b = bundle('member1', process.pid);
    const r = start(b, 'member1');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, socketAddress(addr, ns, sid));
    assert.equal(readFileSync(join(b, 'address'), 'utf8'), r.stdout, 'the address file too');
  });

  it('a sandbox, a member of a dead daemon, or of a pod without a socket goes to the Node start', () => {
    const dead = spawnSync('true').pid!;
    const cases: Array<[string, string]> = [
      [bundle(sid, process.pid), sid],
      [bundle('member2', dead), 'member2'],
      [bundle('member3', process.pid, 'nosocket'), 'member3'],
    ];
    for (const [b, id] of cases) assert.equal(start(b, id).stdout, 'NODE\n', id);
  });
});
