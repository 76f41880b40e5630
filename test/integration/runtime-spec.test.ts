import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mountsUnder } from '../../src/platform/mounts.js';
import { busyboxBundle, busyboxRootfs } from '../helpers/bundle.js';
import { startCacheServer } from '../helpers/cache-server.js';
import { runtimeEnv } from '../helpers/runtime-cli.js';
import { vmDirsLeft } from '../helpers/vm-env.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const md5 = (b: Buffer | string) => createHash('md5').update(b).digest('hex');

/**
 * What a container writes reaches the host, and the OCI spec fields vmcache applies in the guest (or refuses),
 * seen from inside real containers: busybox bundles run by the CLI, VMs from one shared cache server.
 */
describe('OCI runtime: no write lost, and the spec honoured or refused (real QEMU)', () => {
  const { env, root, cfg, endpoint, cliEnv, vmc, vmcToFile } = runtimeEnv();
  let rootfs: string;
  let server: Awaited<ReturnType<typeof startCacheServer>>;
  const containersLeft = () =>
    existsSync(join(root, 'containers')) ? readdirSync(join(root, 'containers')) : [];
  const status = async (id: string) => {
    const r = await vmc(['state', id]);
    return r.code === 0 ? (JSON.parse(r.stdout) as { status: string }).status : 'gone';
  };
  const waitFor = async (what: string, ok: () => boolean | Promise<boolean>, ms = 60_000) => {
    const deadline = Date.now() + ms;
    while (!(await ok())) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await sleep(100);
    }
  };
  /** A fresh writable busybox root and a volume directory for one test. */
  const fresh = (name: string) => {
    const dir = join(env.runDir, name);
    const r = busyboxRootfs(dir);
    const vol = join(dir, 'vol-src');
    mkdirSync(vol);
    return { dir, rootfs: r, vol };
  };
  // Writes, in the container: a few bytes, 4 MiB, and 200 small files, to its root and to its volume; prints
  // their checksums as the guest sees them.
  const writer = (dir: string) =>
    `for d in / /vol; do echo hello-data > $d/small; dd if=/dev/urandom of=$d/big bs=64k count=64 2>/dev/null; ` +
    `mkdir -p $d/many; i=0; while [ $i -lt 200 ]; do echo $i > $d/many/f$i; i=$((i+1)); done; done; ` +
    `for d in / /vol; do md5sum $d/small $d/big | cut -d" " -f1; cat $d/many/* | md5sum | cut -d" " -f1; done > /vol/${dir}.sums`;
  /** Checksums of what the host sees, in the order `writer` prints them. */
  const hostSums = (rootDir: string, vol: string) =>
    [rootDir, vol].flatMap((d) => {
      const many = Array.from({ length: 200 }, (_, i) => `f${i}`)
        .sort()
        .map((f) => readFileSync(join(d, 'many', f)));
      return [
        md5(readFileSync(join(d, 'small'))),
        md5(readFileSync(join(d, 'big'))),
        md5(Buffer.concat(many)),
      ];
    });
  const volMount = (source: string) => ({
    destination: '/vol',
    type: 'bind',
    source,
    options: ['rbind', 'rw'],
  });

  before(async () => {
    rootfs = busyboxRootfs(join(env.runDir, 'busybox'));
    writeFileSync(cfg, `[factory]\nvm_cache_number = 2\nvm_cache_endpoint = "${endpoint}"\n`);
    server = await startCacheServer(cliEnv, endpoint);
  });

  after(async () => {
    for (const id of containersLeft()) await vmc(['delete', '--force', id]);
    await server.stop();
    assert.deepEqual(mountsUnder(env.runDir), [], 'mounts left behind');
    assert.deepEqual(vmDirsLeft(env.runDir), [], 'VMs left behind');
    env.cleanup();
  });

  it('a normal exit: every byte written to the root and to a volume is on the host when run returns', async () => {
    const f = fresh('exit');
    const b = busyboxBundle(join(f.dir, 'bundle'), f.rootfs, {
      args: ['sh', '-c', writer('exit')],
      readonly: false,
      mounts: [volMount(f.vol)],
    });
    const r = await vmc(['run', '--bundle', b, 'w1']);
    assert.equal(r.code, 0, r.stderr);
    const guest = readFileSync(join(f.vol, 'exit.sums'), 'utf8').trim().split('\n');
    assert.equal(guest.length, 6);
    assert.deepEqual(hostSums(f.rootfs, f.vol), guest);
    assert.equal(readFileSync(join(f.rootfs, 'small'), 'utf8'), 'hello-data\n');
  });

  it('SIGKILL right after the writes return, and an exec’s writes before delete --force: nothing lost', async () => {
    const f = fresh('kill');
    const b = busyboxBundle(join(f.dir, 'bundle'), f.rootfs, {
      args: ['sh', '-c', `${writer('kill')}; touch /vol/written; while :; do sleep 1; done`],
      readonly: false,
      mounts: [volMount(f.vol)],
    });
    const out = join(f.dir, 'out');
    assert.equal(await vmcToFile(['run', '-d', '--bundle', b, 'k1'], out), 0, readFileSync(out, 'utf8'));
    await waitFor('the writes', () => existsSync(join(f.vol, 'written')));
    assert.equal((await vmc(['kill', 'k1', 'KILL'])).code, 0);
    await waitFor('k1 to stop', async () => (await status('k1')) === 'stopped');
    assert.deepEqual(
      hostSums(f.rootfs, f.vol),
      readFileSync(join(f.vol, 'kill.sums'), 'utf8').trim().split('\n'),
    );
    assert.equal((await vmc(['delete', 'k1'])).code, 0);

    // An exec writes into a running container, which is then deleted with --force.
    const g = fresh('force');
    const b2 = busyboxBundle(join(g.dir, 'bundle'), g.rootfs, {
      args: ['sh', '-c', 'while :; do sleep 1; done'],
      readonly: false,
      mounts: [volMount(g.vol)],
    });
    assert.equal(await vmcToFile(['run', '-d', '--bundle', b2, 'f1'], out), 0, readFileSync(out, 'utf8'));
    const ex = await vmc(['exec', 'f1', '--', 'sh', '-c', writer('force')]);
    assert.equal(ex.code, 0, ex.stderr);
    assert.equal((await vmc(['delete', '--force', 'f1'])).code, 0);
    assert.deepEqual(
      hostSums(g.rootfs, g.vol),
      readFileSync(join(g.vol, 'force.sums'), 'utf8').trim().split('\n'),
    );
  });

  it('applies rlimits, the OOM score, masked and read-only paths, sysctls, the domain name, /dev/ptmx and bind names', async () => {
    const f = fresh('spec');
    const b = busyboxBundle(join(f.dir, 'bundle'), rootfs, {
      args: [
        'sh',
        '-c',
        [
          'grep "Max open files" /proc/self/limits',
          'cat /proc/self/oom_score_adj',
          'echo "kcore=$(wc -c < /proc/kcore)"',
          'echo "firmware=$(ls /sys/firmware | wc -l)"',
          'echo 1 > /proc/sys/kernel/shmmni 2>/dev/null && echo sys-writable || echo sys-readonly',
          'cat /proc/sys/kernel/shmmax /proc/sys/kernel/domainname',
          'readlink /dev/ptmx',
          'exec 3<>/dev/ptmx && ls /dev/pts | tr "\\n" " " && echo',
          'grep " /vol " /proc/self/mountinfo | cut -d" " -f4',
        ].join('; '),
      ],
      mounts: [volMount(f.vol)],
    });
    const spec = JSON.parse(readFileSync(join(b, 'config.json'), 'utf8'));
    spec.process.rlimits = [{ type: 'RLIMIT_NOFILE', soft: 512, hard: 1024 }];
    spec.process.oomScoreAdj = 500;
    spec.linux.sysctl = { 'kernel.shmmax': '65536' };
    spec.domainname = 'example.org';
    writeFileSync(join(b, 'config.json'), JSON.stringify(spec));
    const r = await vmc(['run', '--bundle', b, 's1']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0]!, /^Max open files\s+512\s+1024\s+files/);
    assert.equal(lines[1], '500');
    assert.equal(lines[2], 'kcore=0', '/proc/kcore is masked by /dev/null');
    assert.equal(lines[3], 'firmware=0', '/sys/firmware is masked by an empty tmpfs');
    assert.equal(lines[4], 'sys-readonly', '/proc/sys is read-only (readonlyPaths)');
    assert.deepEqual(lines.slice(5, 7), ['65536', 'example.org']);
    assert.equal(lines[7], 'pts/ptmx');
    assert.match(lines[8]!, /^0 ptmx $/, 'a pty opened through /dev/ptmx');
    assert.match(lines[9]!, /\/vol-src$/, "a bind's root in mountinfo ends with its source's name");
  });

  it('resolves a mount destination through symlinks inside the root (an absolute link stays in the root)', async () => {
    const f = fresh('links');
    // As images do: /etc/resolv.conf -> /run/x/resolv.conf (absolute), and a link that climbs out of the root.
    mkdirSync(join(f.rootfs, 'run/x'), { recursive: true });
    symlinkSync('/run/x/resolv.conf', join(f.rootfs, 'etc/resolv.conf'));
    const outside = join(f.dir, 'outside');
    mkdirSync(outside);
    symlinkSync(`../../../../../../../..${outside}`, join(f.rootfs, 'escape'));
    const hostFile = join(f.dir, 'resolv.conf');
    writeFileSync(hostFile, 'nameserver 198.18.0.53\n');
    const b = busyboxBundle(join(f.dir, 'bundle'), f.rootfs, {
      args: ['sh', '-c', 'cat /etc/resolv.conf; echo in > /escape/planted && echo written'],
      readonly: false,
      mounts: [
        { destination: '/etc/resolv.conf', type: 'bind', source: hostFile, options: ['rbind', 'ro'] },
        { destination: '/escape', type: 'bind', source: f.vol, options: ['rbind', 'rw'] },
      ],
    });
    const r = await vmc(['run', '--bundle', b, 'l1']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      'nameserver 198.18.0.53\nwritten\n',
      'both binds are where the container sees them',
    );
    assert.equal(readFileSync(join(f.vol, 'planted'), 'utf8'), 'in\n', 'the write went into the volume');
    assert.deepEqual(readdirSync(outside), [], 'nothing outside the root was mounted on or written');
  });

  it('runs hooks where the spec puts them, with the state on stdin; a failing prestart or startContainer hook fails', async () => {
    const f = fresh('hooks');
    const log = join(f.dir, 'hooks.log');
    const hook = join(f.dir, 'hook.sh');
    writeFileSync(hook, `#!/bin/sh\necho "$1 $HOOK_ENV $(cat | tr -d '\\n')" >> ${log}\n`);
    chmodSync(hook, 0o755);
    // The startContainer hook is the container's: it lives in the container's root and runs there.
    writeFileSync(
      join(f.rootfs, 'start-hook.sh'),
      '#!/bin/sh\necho "in-guest $(hostname) $(cat)" > /vol/start-hook\n',
    );
    chmodSync(join(f.rootfs, 'start-hook.sh'), 0o755);
    const h = (kind: string) => ({ path: hook, args: ['hook.sh', kind], env: [`HOOK_ENV=env-${kind}`] });
    const b = busyboxBundle(join(f.dir, 'bundle'), f.rootfs, {
      args: ['sh', '-c', 'cat /vol/start-hook'],
      hostname: 'hooked',
      mounts: [volMount(f.vol)],
    });
    const spec = JSON.parse(readFileSync(join(b, 'config.json'), 'utf8'));
    spec.hooks = {
      prestart: [h('prestart')],
      createRuntime: [h('createRuntime')],
      createContainer: [h('createContainer')],
      startContainer: [{ path: '/start-hook.sh', timeout: 30 }],
      poststart: [h('poststart'), { path: '/bin/false' }],
      poststop: [h('poststop')],
    };
    writeFileSync(join(b, 'config.json'), JSON.stringify(spec));
    const r = await vmc(['run', '--bundle', b, 'h1']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stdout,
      /^in-guest hooked \{.*"id":"h1".*"status":"created"/,
      'startContainer ran in the container',
    );
    const lines = readFileSync(log, 'utf8').trim().split('\n');
    assert.deepEqual(
      lines.map((l) => l.split(' ')[0]),
      ['prestart', 'createRuntime', 'createContainer', 'poststart', 'poststop'],
      'host hooks in life-cycle order; a failing poststart only warns',
    );
    for (const l of lines) {
      const [kind, envv, ...json] = l.split(' ');
      assert.equal(envv, `env-${kind}`);
      const st = JSON.parse(json.join(' ')) as { id: string; status: string; bundle: string };
      assert.equal(st.id, 'h1');
      assert.equal(st.bundle, b);
      assert.equal(
        st.status,
        {
          prestart: 'creating',
          createRuntime: 'creating',
          createContainer: 'creating',
          poststart: 'running',
          poststop: 'stopped',
        }[kind!],
      );
    }

    // A failing prestart hook: create fails naming it, and nothing is left.
    spec.hooks = { prestart: [{ path: '/bin/sh', args: ['sh', '-c', 'echo no-way >&2; exit 3'] }] };
    writeFileSync(join(b, 'config.json'), JSON.stringify(spec));
    const bad = await vmc(['create', '--bundle', b, 'h2']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /hooks\.prestart\[0\].*exit 3.*no-way.*VMC_ERR_OCI_HOOK/s);
    assert.deepEqual(containersLeft(), []);
    // A failing startContainer hook: start fails.
    spec.hooks = { startContainer: [{ path: '/bin/false' }] };
    writeFileSync(join(b, 'config.json'), JSON.stringify(spec));
    const bad2 = await vmc(['run', '--bundle', b, 'h3']);
    assert.notEqual(bad2.code, 0);
    assert.match(bad2.stderr, /startContainer hook \/bin\/false failed with exit status 1/);
    assert.deepEqual(containersLeft(), []);
    await waitFor('the failed containers’ VMs to go', () => vmDirsLeft(env.runDir).length <= 2);
  });

  it('refuses a host namespace path and says what `vmcache features` leaves to the VM, taking no VM', async () => {
    const b = busyboxBundle(join(env.runDir, 'nsb'), rootfs, { args: ['true'] });
    const spec = JSON.parse(readFileSync(join(b, 'config.json'), 'utf8'));
    const own = `/proc/${process.pid}/ns/ipc`; // the host's (this test's) IPC namespace
    spec.linux.namespaces = [{ type: 'ipc', path: own }];
    writeFileSync(join(b, 'config.json'), JSON.stringify(spec));
    const r = await vmc(['create', '--bundle', b, 'n1']);
    assert.notEqual(r.code, 0);
    assert.ok(
      r.stderr.includes(`linux.namespaces[0].path ${own}: a host ipc namespace cannot be joined`),
      r.stderr,
    );
    assert.match(r.stderr, /VMC_ERR_OCI_UNSUPPORTED/);
    spec.linux.namespaces = [{ type: 'cgroup', path: own }];
    writeFileSync(join(b, 'config.json'), JSON.stringify(spec));
    assert.match(
      (await vmc(['create', '--bundle', b, 'n1'])).stderr,
      /must be a cgroup namespace.*not a ipc one/,
    );
    assert.deepEqual(containersLeft(), []);
    const feat = JSON.parse((await vmc(['features'])).stdout) as {
      hooks: string[];
      linux: { namespaces: string[]; seccomp: { enabled: boolean } };
      annotations: Record<string, string>;
    };
    assert.deepEqual(feat.hooks, [
      'prestart',
      'createRuntime',
      'createContainer',
      'startContainer',
      'poststart',
      'poststop',
    ]);
    assert.ok(!feat.linux.namespaces.includes('user'));
    assert.equal(feat.linux.seccomp.enabled, false);
    assert.match(feat.annotations['org.vmcache.ignored.process.capabilities']!, /VM/);
  });
});
