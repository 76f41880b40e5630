/**
 * The reliability suite's workbench: a private run directory, the CLI bound to it with a deadline on every
 * call, a cache server started from a configuration, and the leak census (QEMU processes, mounts, VM
 * directories, taps) that every section checks before and after.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mountsUnder } from '../src/platform/mounts.js';
import { VMCACHE } from '../test/helpers/cli.js';
import { IMAGE_DIR, pidsMentioning } from '../test/helpers/vm-env.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A finished (or killed at its deadline) process. */
export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

/** Runs a program; SIGKILL at `ms` (reported as timedOut): nothing here waits without a bound. */
export function runBounded(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  ms: number,
  input?: string,
): Promise<Ran> {
  const t0 = performance.now();
  const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdin.on('error', () => {});
  child.stdin.end(input);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.on('data', (c: Buffer) => err.push(c));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
    child.stdout.destroy();
    child.stderr.destroy();
  }, ms);
  return new Promise((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        timedOut,
        ms: performance.now() - t0,
      });
    }),
  );
}

/** What a section may have left behind. */
export interface Census {
  qemu: number;
  mounts: number;
  vmDirs: number;
  taps: number;
}

/** A cache server process of the lab. */
export interface LabServer {
  pid: number;
  /** Resolves once `n` VMs are idle, within `ms`. */
  waitReady(n: number, ms: number): Promise<void>;
  /** Idle VM ids, from `factory status --json`. */
  idle(): Promise<string[]>;
  /** SIGTERM (idle VMs stopped, the template kept), then SIGKILL if still there; bounded. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash would. */
  crash(): Promise<void>;
  /** Resident memory (MiB) and open descriptors of the server process. */
  usage(): { rssMiB: number; fds: number };
}

export class Lab {
  readonly runDir: string;
  readonly cfg: string;
  readonly socket: string;
  readonly root: string;
  readonly env: NodeJS.ProcessEnv;

  constructor(readonly dir: string) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    this.runDir = join(dir, 'run');
    mkdirSync(this.runDir);
    this.cfg = join(dir, 'configuration.toml');
    this.socket = join(dir, 'cache.sock');
    this.root = join(dir, 'root');
    this.env = {
      ...process.env,
      VMCACHE_RUN_DIR: this.runDir,
      VMCACHE_IMAGE_DIR: process.env.VMCACHE_IMAGE_DIR ?? IMAGE_DIR,
      VMCACHE_CONFIG: this.cfg,
    };
  }

  /** The CLI with this lab's configuration and state root. */
  vmc(args: string[], ms = 120_000, input?: string, env = this.env): Promise<Ran> {
    return runBounded(VMCACHE, ['--root', this.root, ...args], env, ms, input);
  }

  /** Writes the configuration (with the lab's endpoint) and starts `factory init`. */
  async startServer(toml: string, env = this.env): Promise<LabServer> {
    writeFileSync(this.cfg, `${toml}\n`);
    const server = spawn(VMCACHE, ['factory', 'init'], { env, stdio: 'ignore' });
    const exited = new Promise<void>((r) => server.on('exit', () => r()));
    for (let i = 0; !existsSync(this.socket); i++) {
      if (server.exitCode !== null || i > 600) throw new Error('the cache server never listened');
      await sleep(100);
    }
    const status = async () => {
      const r = await this.vmc(['factory', 'status', '--json'], 20_000, undefined, env);
      try {
        return JSON.parse(r.stdout) as { vmstatus?: Array<{ id: string }> };
      } catch {
        return {};
      }
    };
    const pid = server.pid!;
    return {
      pid,
      async waitReady(n, ms) {
        const deadline = Date.now() + ms;
        while (((await status()).vmstatus?.length ?? 0) < n) {
          if (Date.now() > deadline) throw new Error(`the pool did not reach ${n} ready VMs within ${ms} ms`);
          await sleep(250);
        }
      },
      idle: async () => ((await status()).vmstatus ?? []).map((v) => v.id),
      stop: async () => {
        if (server.exitCode === null) server.kill('SIGTERM');
        await Promise.race([exited, sleep(30_000)]);
        if (server.exitCode === null) server.kill('SIGKILL');
        await Promise.race([exited, sleep(10_000)]);
      },
      crash: async () => {
        server.kill('SIGKILL');
        await Promise.race([exited, sleep(10_000)]);
      },
      usage: () => usage(pid),
    };
  }

  /** Removes the template (`factory destroy`), stops whatever VM the lab still records, removes the lab. */
  async cleanup(): Promise<void> {
    await this.vmc(['factory', 'destroy'], 60_000);
    await this.vmc(['vm', 'gc', '--unowned'], 60_000);
    rmSync(this.dir, { recursive: true, force: true });
  }

  census(): Census {
    const vm = join(this.runDir, 'vm');
    return {
      qemu: pidsMentioning(this.dir).filter((p) => readCmd(p).startsWith('qemu-system')).length,
      mounts: mountsUnder(this.dir).length,
      vmDirs: existsSync(vm) ? readdirSync(vm).length : 0,
      taps: tapCount(),
    };
  }
}

function readCmd(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

/** vmcache's tap devices in the host namespace (named vmt…). */
function tapCount(): number {
  try {
    return execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => /^\d+: vmt/.test(l)).length;
  } catch {
    return 0;
  }
}

/** RSS (MiB) and open descriptors of a process (0s once it is gone). */
export function usage(pid: number): { rssMiB: number; fds: number } {
  try {
    const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { rssMiB: rss ? Number(rss[1]) / 1024 : 0, fds: readdirSync(`/proc/${pid}/fd`).length };
  } catch {
    return { rssMiB: 0, fds: 0 };
  }
}

/** "0 leaked" or what was left, comparing a census to the one before. */
export function leaks(before: Census, after: Census): { ok: boolean; text: string } {
  const bad = (Object.keys(after) as Array<keyof Census>).filter((k) => after[k] > before[k]);
  return bad.length === 0
    ? { ok: true, text: '0 leaked (QEMU, mounts, VM dirs, taps)' }
    : { ok: false, text: `left behind: ${bad.map((k) => `${after[k] - before[k]} ${k}`).join(', ')}` };
}
