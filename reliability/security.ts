/**
 * Security: a non-root process (a real unprivileged user, `nobody`) cannot use the cache socket, a container's
 * control socket, a VM's agent or QMP socket, or read the state files; and a container cannot see host files
 * outside its root and binds, however its bundle tries (symlinks in the rootfs to host paths, a mount
 * destination that is a symlink escaping the root, bind sources with `..`, a rootfs that is a symlink),
 * checked from inside the container.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { busyboxBundle, busyboxRootfs } from '../test/helpers/bundle.js';
import { type Lab, leaks, runBounded } from './lab.js';
import type { ReliabilityRow } from './report.js';
import { templatePool } from './stress.js';

/** Tries, as uid/gid 65534, to connect to each socket and read each file; returns what it managed. */
async function asNobody(sockets: string[], files: string[]): Promise<string[]> {
  const script = `
    const net = require('node:net'); const fs = require('node:fs');
    const [socks, files] = JSON.parse(process.argv[1]);
    const got = [];
    (async () => {
      for (const s of socks) await new Promise((res) => {
        const c = net.connect(s, () => { got.push('connected ' + s); c.destroy(); res(); });
        c.on('error', () => res());
      });
      for (const f of files) { try { fs.readFileSync(f); got.push('read ' + f); } catch {} }
      process.stdout.write(JSON.stringify(got));
    })();`;
  const r = await runBounded(
    'setpriv',
    [
      '--reuid=65534',
      '--regid=65534',
      '--clear-groups',
      process.execPath,
      '-e',
      script,
      JSON.stringify([sockets, files]),
    ],
    { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    30_000,
  );
  if (r.code !== 0) throw new Error(`the unprivileged probe failed: ${r.stderr.slice(0, 200)}`);
  return JSON.parse(r.stdout) as string[];
}

/** Every file (recursively) under `dir` whose name matches. */
function find(dir: string, re: RegExp): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of existsSync(d) ? readdirSync(d, { withFileTypes: true }) : []) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (re.test(e.name)) out.push(p);
    }
  };
  walk(dir);
  return out;
}

export async function securityRows(lab: Lab, log: (s: string) => void): Promise<ReliabilityRow[]> {
  const rows: ReliabilityRow[] = [];
  const before = lab.census();
  const server = await lab.startServer(templatePool(lab, 2));
  try {
    await server.waitReady(2, 120_000);
    const rootfs = busyboxRootfs(join(lab.dir, 'sec-busybox'));
    const bundle = (name: string, o: Parameters<typeof busyboxBundle>[2], root = rootfs) =>
      busyboxBundle(join(lab.dir, 'bundles', name), root, o);

    log('security: an unprivileged user against the sockets and state files');
    const b = bundle('held', { args: ['sh', '-c', 'while :; do sleep 1; done'] });
    const r = await lab.vmc(['run', '-d', '--bundle', b, 'held'], 90_000);
    if (r.code !== 0) throw new Error(`run -d failed: ${r.stderr}`);
    try {
      const sockets = [lab.socket, ...find(lab.runDir, /\.sock$/)];
      const files = [...find(lab.runDir, /\.json$/), ...find(lab.root, /\.json$/)];
      const got = await asNobody(sockets, files);
      rows.push({
        section: 'security',
        name: 'a non-root user (nobody) against the cache, control, agent and QMP sockets and the state files',
        n: sockets.length + files.length,
        ok: got.length === 0 && sockets.length >= 4,
        outcome:
          got.length === 0
            ? `all ${sockets.length} sockets and ${files.length} state files refused`
            : `reached: ${got.join(', ').slice(0, 200)}`,
      });
    } finally {
      await lab.vmc(['delete', '--force', 'held'], 60_000);
    }

    log('security: a container against host files');
    const token = randomBytes(12).toString('hex');
    const secretDir = join(lab.dir, 'host-secret');
    mkdirSync(secretDir, { recursive: true });
    writeFileSync(join(secretDir, 'secret'), token);
    const outside = join(lab.dir, 'outside');
    mkdirSync(outside, { recursive: true });
    const vol = join(lab.dir, 'vol');
    const vol2 = join(lab.dir, 'vol2');
    mkdirSync(vol, { recursive: true });
    mkdirSync(vol2, { recursive: true });
    writeFileSync(join(vol2, 'only-this'), 'x');
    // A root of its own with the traps in it: a link to the host's secret, a link out of the root as a mount
    // destination.
    const trapRoot = busyboxRootfs(join(lab.dir, 'trap-busybox'));
    symlinkSync(join(secretDir, 'secret'), join(trapRoot, 'evil'));
    symlinkSync(`../../../../../../..${outside}`, join(trapRoot, 'escape'));
    const linkedRoot = join(lab.dir, 'rootfs-link');
    symlinkSync(trapRoot, linkedRoot);
    const probe = bundle(
      'probe',
      {
        args: [
          'sh',
          '-c',
          [
            'cat /evil 2>/dev/null; echo "evil:$?"',
            'echo planted > /escape/planted 2>/dev/null; echo "escape:$?"',
            'ls /dotdot | tr "\\n" " "; echo',
            'ls /proc/1/root/run/vmcache/shared 2>/dev/null; echo "guestroot:$?"',
          ].join('; '),
        ],
        readonly: false,
        mounts: [
          { destination: '/escape', type: 'bind', source: vol, options: ['rbind', 'rw'] },
          { destination: '/dotdot', type: 'bind', source: `${vol}/../vol2`, options: ['rbind', 'ro'] },
        ],
      },
      linkedRoot,
    );
    const p = await lab.vmc(['run', '--bundle', probe, 'probe'], 120_000);
    const lines = p.stdout.trim().split('\n');
    const checks: Array<[string, boolean]> = [
      [
        'a rootfs symlink to a host file does not reach it',
        !p.stdout.includes(token) && lines[0] === 'evil:1',
      ],
      [
        'a mount destination that is a symlink out of the root does not mount or write outside',
        !existsSync(join(outside, 'planted')) && readdirSync(outside).length === 0,
      ],
      ['a bind source with .. shows exactly the directory it resolves to', lines[2]?.trim() === 'only-this'],
      ['the host secret is nowhere in the container', !p.stdout.includes(token)],
      ["/proc/1/root is the container's own root, not the guest's", lines.includes('guestroot:1')],
      ['a rootfs given as a symlink runs, confined like any other', p.code === 0],
    ];
    for (const [name, ok] of checks)
      rows.push({
        section: 'security',
        name,
        n: 1,
        ok,
        outcome: ok
          ? 'refused or confined'
          : `failed: ${JSON.stringify(lines).slice(0, 200)} ${p.stderr.slice(0, 200)}`,
      });
  } finally {
    await server.stop();
  }
  const l = leaks(before, lab.census());
  rows.push({ section: 'security', name: 'after the probes: nothing left', n: 1, ok: l.ok, outcome: l.text });
  return rows;
}
