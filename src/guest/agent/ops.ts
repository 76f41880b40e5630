import { execFile, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import type { ContainerExec, ExecRequest } from '../../protocol/agent/messages.js';
import { SHARED_TAG } from '../../protocol/shared-tag.js';
import { SPARE_NIC_MAC } from '../../protocol/spare-nic.js';
import { HelperProcess } from './helper.js';
import { nicHelperArg } from './nic-line.js';
import type { GuestOps } from './server.js';

const run = promisify(execFile);

/** The static helper built into the guest image (Node cannot issue ioctls or set the clock). */
export const HELPER = '/opt/vmcache/vmc-helper';
/** Where the guest mounts the VM's shared directory (the 9p tag SHARED_TAG). */
export const SHARED_MOUNT = '/run/vmcache/shared';

/** Where the containers' cgroups are (vmc-helper's `enter -c NAME` makes `vmcache/NAME`). */
const CGROUPS = '/sys/fs/cgroup/vmcache';

function read(path: string): string {
  return readFileSync(path, 'utf8').trim();
}

const helper = new HelperProcess(HELPER);

/** How often `waitForNic` looks for the NIC: sysfs has no change events, and a look costs ~1 ms under TCG. */
const NIC_POLL_MS = 20;

/** Whether the share is mounted (the agent mounts it on the first container, or before a VM is parked). */
function shareMounted(): boolean {
  return read('/proc/mounts')
    .split('\n')
    .some((l) => l.split(' ')[1] === SHARED_MOUNT);
}

/**
 * Work done once at agent start-up so that the first requests after a hand-off are fast: start the helper,
 * and run one process so that Node's child-process machinery is loaded and compiled (the first spawn in a
 * fresh guest Node took ~900 ms under TCG).
 */
export async function prewarm(): Promise<void> {
  helper.start();
  // Present since boot (the initramfs loads virtio_net), or not at all. Another MAC means a pod took it (an
  // agent restarted later must not touch it).
  spare = Promise.resolve(nicWithMac(SPARE_NIC_MAC) ?? null);
  await run('/bin/true', []).catch(() => undefined);
}

/** The name of the NIC with MAC `mac` now, if there is one. */
function nicWithMac(mac: string): string | undefined {
  return readdirSync('/sys/class/net').find((d) => {
    try {
      return read(`/sys/class/net/${d}/address`) === mac;
    } catch {
      return false; // gone between the listing and the read
    }
  });
}

/** The spare NIC's name (once its warm-up is over), or null: none, or taken by a pod (see `spareNic`). */
let spare: Promise<string | null> = Promise.resolve(null);

/**
 * Sets the spare NIC (protocol/spare-nic.ts) up and down once, right before the VM is parked (the `warm`
 * request), so that the kernel's paths for opening a virtio-net NIC, IPv6 address set-up and rtnetlink, and
 * the helper's, have run and are still translated when a pod takes the NIC. Measured 2026-12-03 (TCG, tb-size
 * 64 MiB): the pod's NIC set-up took ~450 ms in a handed-off VM when warmed at agent start-up (the
 * translations were gone by the hand-off), as when hot-plugged; a NIC set up later in the same VM took
 * 20–60 ms. A failed warm-up only costs speed.
 */
async function warmSpareNic(name: string): Promise<string> {
  // Its own MAC again, and an IPv6 address and route of the unique-local range: the link going down removes
  // both (the kernel keeps only IPv4 addresses over a down), so the NIC is parked as it booted.
  const warmUp = {
    mac: SPARE_NIC_MAC,
    mtu: 1500,
    addresses: ['fd76:6d63::1/128'],
    routes: [{ dest: 'fd76:6d63:1::/64' }],
  };
  await helper.run('net', nicHelperArg(name, warmUp, true)).catch(() => undefined);
  await helper.run('down', name).catch(() => undefined);
  return name;
}

/**
 * The helper's `enter` command line for a container process (see vmc-helper.c). Paths from the request are
 * relative to the share; they were validated not to climb out of it.
 */
export function enterArgs(e: ExecRequest, c: ContainerExec, shared = SHARED_MOUNT): string[] {
  const a = ['enter', '-r', `${shared}/${c.root}`, '-u', String(e.uid ?? 0), '-g', String(e.gid ?? 0)];
  if (c.join !== undefined) a.push('-j', String(c.join));
  if (c.hostname) a.push('-h', c.hostname);
  if (e.cwd) a.push('-w', e.cwd);
  if (c.additionalGids?.length) a.push('-G', c.additionalGids.join(','));
  if (c.cgroup) {
    a.push('-c', c.cgroup.name);
    for (const [k, v] of Object.entries(c.cgroup.limits ?? {})) a.push('-l', `${k}=${v}`);
  }
  if (c.readonly) a.push('-R');
  if (c.noNewPrivileges) a.push('-n');
  if (e.terminal) a.push('-T', `${e.terminal.rows},${e.terminal.cols}`);
  for (const m of c.mounts ?? []) {
    const source = m.type === 'bind' ? `${shared}/${m.source}` : m.source;
    a.push('-m', [m.type, String(m.flags), source, m.target, m.data].join('\x1f'));
  }
  for (const p of c.maskedPaths ?? []) a.push('-M', p);
  for (const p of c.readonlyPaths ?? []) a.push('-O', p);
  for (const [k, v] of Object.entries(c.sysctl ?? {})) a.push('-s', `${k}=${v}`);
  if (c.propagation !== undefined) a.push('-P', String(c.propagation));
  const bound = (v: number | null) => (v === null ? 'inf' : String(v));
  for (const r of c.rlimits ?? []) a.push('-L', `${r.resource}:${bound(r.soft)}:${bound(r.hard)}`);
  if (c.oomScoreAdj !== undefined) a.push('-o', String(c.oomScoreAdj));
  for (const k of c.shareNamespaces?.kinds ?? []) a.push('-N', `${k}:${c.shareNamespaces!.pid}`);
  for (const h of c.startHooks ?? [])
    a.push('-k', [String(h.timeout), h.path, h.args.join('\x1e'), h.env.join('\x1e')].join('\x1f'));
  if (c.hookState !== undefined) a.push('-S', c.hookState);
  return [...a, '--', ...e.args];
}

/** Number of online CPUs, from the kernel's list (e.g. "0-1,3"). */
function onlineCpuCount(): number {
  return read('/sys/devices/system/cpu/online')
    .split(',')
    .reduce((n, r) => {
      const [a, b] = r.split('-').map(Number);
      return n + (b === undefined ? 1 : b - a! + 1);
    }, 0);
}

/** Guest operations on a real Linux guest. */
export const linuxOps: GuestOps = {
  connected() {
    // The first helper command after a VM resumes took ~17 ms under TCG against ~7 ms in a running VM (scratch
    // runs of 2026-12-02): a no-op now moves that wake-up off the hand-off's reseed and clock set.
    helper.run('nop', '-').catch(() => undefined);
  },
  async reseed(hex) {
    await helper.run('reseed', hex);
  },
  async setTime(epochNs) {
    await helper.run('settime', epochNs);
  },
  async online({ cpus, memory }) {
    // A hot-added vCPU reaches the guest through an ACPI event handled asynchronously: its sysfs directory
    // may appear only after this request arrives. Keep onlining until `cpus` are online, within a bound.
    let onlinedCpus = 0;
    const deadline = Date.now() + 60_000;
    while (cpus > 0 && onlineCpuCount() < cpus) {
      for (const d of readdirSync('/sys/devices/system/cpu')) {
        if (!/^cpu[0-9]+$/.test(d)) continue;
        const f = `/sys/devices/system/cpu/${d}/online`;
        try {
          if (read(f) === '0') {
            writeFileSync(f, '1');
            onlinedCpus++;
          }
        } catch {
          // cpu0 has no 'online' file
        }
      }
      if (onlineCpuCount() >= cpus) break;
      if (Date.now() > deadline)
        throw new Error(`only ${onlineCpuCount()} of ${cpus} vCPUs came online within 60 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
    let blocks = 0;
    if (memory) {
      for (const d of readdirSync('/sys/devices/system/memory')) {
        if (!d.startsWith('memory')) continue;
        const f = `/sys/devices/system/memory/${d}/state`;
        try {
          // online_movable keeps the block removable (plain 'online' made unplug fail, research §6).
          if (read(f) === 'offline') {
            writeFileSync(f, 'online_movable');
            blocks++;
          }
        } catch {
          // not a block
        }
      }
    }
    return { cpus: onlinedCpus, memoryBlocks: blocks };
  },
  async mountShared() {
    if (shareMounted()) return { path: SHARED_MOUNT };
    mkdirSync(SHARED_MOUNT, { recursive: true });
    // cache=mmap (as Kata mounts 9p): reads and writes go to the host as they happen, so whatever a container
    // wrote is on the host when write() returns, and the host's changes to this tree (binds of container roots
    // made while the guest runs) are seen at once. Only pages of shared writable mappings are cached; syncShared
    // writes them back. cache=loose kept writes in the guest's page cache, and a VM destroyed after the
    // container exited lost them (measured: a 16 MiB file and 1000 small files arrived empty).
    await run('/bin/mount', [
      '-t',
      '9p',
      '-o',
      'trans=virtio,version=9p2000.L,msize=262144,cache=mmap',
      SHARED_TAG,
      SHARED_MOUNT,
    ]);
    return { path: SHARED_MOUNT };
  },
  async syncShared() {
    if (shareMounted()) await helper.run('syncfs', SHARED_MOUNT);
  },
  async containerCommand(e) {
    await this.mountShared();
    return { file: HELPER, args: enterArgs(e, e.container!) };
  },
  async warm(share) {
    if (share) await this.mountShared();
    // The same spawns a container start makes (helper `enter` with a status pipe; a plain process with pipes),
    // on the guest's own root. Right before a VM is parked, this leaves their code translated and compiled:
    // the first start after a hand-off then costs ~50 ms instead of ~300 ms under TCG (measured).
    const once = (file: string, args: string[], fds: number) =>
      new Promise<void>((resolve) => {
        const c = spawn(file, args, { stdio: Array(fds).fill('pipe') });
        for (const s of c.stdio) (s as NodeJS.ReadableStream | null)?.resume?.();
        c.on('error', () => resolve());
        c.on('close', () => resolve());
      });
    // Every mount type a container gets, in a namespace of its own (nothing reaches the guest's mounts).
    const m = (type: string, target: string) => ['-m', [type, '0', type, target, ''].join('\x1f')];
    await once(
      HELPER,
      [
        'enter',
        '-r',
        '/',
        ...m('proc', '/proc'),
        ...m('tmpfs', '/dev/shm'),
        ...m('devpts', '/dev/pts'),
        ...m('mqueue', '/dev/mqueue'),
        ...m('sysfs', '/sys'),
        '--',
        '/bin/true',
      ],
      4,
    );
    await once('/bin/true', [], 3);
    const name = await spare;
    if (name) {
      spare = warmSpareNic(name);
      await spare;
    }
  },
  async churn(passes) {
    await helper.run('churn', String(passes));
  },
  async signalCgroup(name, signal) {
    const dir = `${CGROUPS}/${name}`;
    let pids: number[];
    try {
      pids = read(`${dir}/cgroup.procs`).split('\n').filter(Boolean).map(Number);
    } catch {
      return 0; // no such container cgroup: nothing left to signal
    }
    // SIGKILL through cgroup.kill also catches processes forked while the list is walked.
    if (signal === 'SIGKILL') {
      try {
        writeFileSync(`${dir}/cgroup.kill`, '1');
        return pids.length;
      } catch {}
    }
    let n = 0;
    for (const pid of pids) {
      try {
        process.kill(pid, signal);
        n++;
      } catch {} // gone in between
    }
    return n;
  },
  async updateCgroup(name, limits) {
    const dir = `${CGROUPS}/${name}`;
    try {
      read(`${dir}/cgroup.procs`);
    } catch {
      return false;
    }
    // The kernel checks each value (an EINVAL names the file in the agent's error).
    for (const [file, value] of Object.entries(limits)) writeFileSync(`${dir}/${file}`, value);
    return true;
  },
  async cgroupStats(name) {
    const dir = `${CGROUPS}/${name}`;
    let current: string;
    try {
      current = read(`${dir}/memory.current`);
    } catch {
      return null;
    }
    const opt = (file: string) => {
      try {
        return read(`${dir}/${file}`).trim();
      } catch {
        return '';
      }
    };
    const limit = (v: string) => (v === '' || v === 'max' ? null : Number(v));
    const flat = (text: string) => {
      const m: Record<string, number> = {};
      for (const line of text.split('\n')) {
        const [k, v] = line.split(' ');
        if (k && v !== undefined) m[k] = Number(v);
      }
      return m;
    };
    return {
      memory: {
        current: Number(current.trim()),
        max: limit(opt('memory.max')),
        peak: limit(opt('memory.peak')),
        stat: flat(opt('memory.stat')),
        events: flat(opt('memory.events')),
      },
      cpu: flat(opt('cpu.stat')),
      pids: { current: Number(opt('pids.current') || 0), max: limit(opt('pids.max')) },
      procs: opt('cgroup.procs')
        .split('\n')
        .filter((l) => l !== '')
        .map(Number),
    };
  },
  async waitForNic(mac, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const name = nicWithMac(mac);
      if (name) return name;
      if (Date.now() > deadline) throw new Error(`no NIC with MAC ${mac} appeared within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, NIC_POLL_MS));
    }
  },
  async spareNic() {
    const name = await spare;
    spare = Promise.resolve(null); // one pod takes it
    return name;
  },
  async configureNic(name, nic, setMac) {
    await helper.run('net', nicHelperArg(name, nic, setMac));
  },
  async info() {
    const mem = /MemTotal:\s+(\d+)/.exec(read('/proc/meminfo'));
    return {
      kernel: read('/proc/sys/kernel/osrelease'),
      uptimeSec: Number(read('/proc/uptime').split(' ')[0]),
      cpusOnline: read('/sys/devices/system/cpu/online'),
      memTotalKiB: mem ? Number(mem[1]) : 0,
      nodeVersion: process.version,
      // Read on request only: the kernel makes the boot id on first read, so a template must never read it.
      bootId: read('/proc/sys/kernel/random/boot_id'),
    };
  },
  async shutdown() {
    await run('/bin/sync', []).catch(() => {});
    await run('/bin/poweroff', ['-f']);
  },
};
