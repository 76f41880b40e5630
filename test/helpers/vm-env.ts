import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { defaultVmSpec } from '../../src/config/defaults.js';
import { readManifest } from '../../src/guest/image/manifest.js';
import { detectAccel } from '../../src/hypervisor/qemu/accel.js';
import type { VmSpec } from '../../src/hypervisor/types.js';
import { systemClock } from '../../src/platform/clock.js';
import { runCommand } from '../../src/platform/command.js';
import { nullLogger } from '../../src/platform/logger.js';
import { mountsUnder } from '../../src/platform/mounts.js';
import { defaultPaths } from '../../src/platform/paths.js';
import type { VmDeps } from '../../src/vm/vm.js';

/** The image built by `vmcache image build` (the README's test command builds it first). */
export const IMAGE_DIR = defaultPaths(process.env, process.getuid?.() ?? 0).imageDir;

/** A private run directory (short: socket paths must stay under 107 bytes) and deps for real VMs. */
export function vmEnv(): { deps: VmDeps; spec: VmSpec; runDir: string; cleanup(): void } {
  if (!readManifest(IMAGE_DIR))
    throw new Error(`no guest image in ${IMAGE_DIR}: run 'vmcache image build' (scripts/test.sh does)`);
  const runDir = mkdtempSync('/tmp/vmc-');
  // A test file whose after-hook fails (it asserts that nothing was left) never reaches cleanup(): when its
  // process exits, whatever it left under the run directory goes (processes, then mounts, detached so that
  // removing the directory cannot reach into them, then the directory), and the failure stays reported.
  const reap = () => {
    for (const pid of pidsMentioning(runDir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
    for (const m of mountsUnder(runDir)) spawnSync('umount', ['-l', m]);
    rmSync(runDir, { recursive: true, force: true });
  };
  process.once('exit', reap);
  const deps: VmDeps = {
    paths: { runDir, imageDir: IMAGE_DIR, cacheDir: '/nonexistent' },
    clock: systemClock,
    logger: nullLogger,
    run: runCommand,
  };
  return {
    deps,
    spec: defaultVmSpec(IMAGE_DIR, detectAccel().accel),
    runDir,
    cleanup: () => {
      process.off('exit', reap);
      rmSync(runDir, { recursive: true, force: true });
    },
  };
}

/** VM directories left under a run directory. */
export function vmDirsLeft(runDir: string): string[] {
  const d = join(runDir, 'vm');
  return existsSync(d) ? readdirSync(d) : [];
}

/** Processes whose command line mentions `needle`. */
export function pidsMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle)) pids.push(Number(pid));
    } catch {}
  }
  return pids;
}

/** True when no process has `needle` on its command line. */
export function noProcessMentions(needle: string): boolean {
  return pidsMentioning(needle).length === 0;
}
