import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { run, VMCACHE } from './cli.js';
import { IMAGE_DIR, vmEnv } from './vm-env.js';

/** The runtime CLI with `--root root` and an environment: to completion (pipes), or with output to a file. */
export function runtimeCli(root: string, env: NodeJS.ProcessEnv) {
  return {
    vmc: (args: string[], input?: string) => run(VMCACHE, ['--root', root, ...args], env, input),
    /**
     * Runs the CLI with stdout/stderr to a file and resolves with its exit status. A created container's
     * host-side process keeps the caller's stdio, so a pipe would stay open until the container ends.
     */
    vmcToFile: (args: string[], file: string): Promise<number | null> => {
      const fd = openSync(file, 'a');
      const child = spawn(VMCACHE, ['--root', root, ...args], { env, stdio: ['ignore', fd, fd] });
      closeSync(fd);
      return new Promise((resolve) => child.on('exit', (code) => resolve(code)));
    },
  };
}

/**
 * A private run directory for runtime tests: the state root, the configuration file and cache endpoint paths,
 * the environment every vmcache process (and containerd or podman in between) gets, and the CLI bound to them.
 */
export function runtimeEnv() {
  const env = vmEnv();
  const root = join(env.runDir, 'root');
  const cfg = join(env.runDir, 'configuration.toml');
  const endpoint = join(env.runDir, 'cache.sock');
  const cliEnv = {
    ...process.env,
    VMCACHE_RUN_DIR: env.runDir,
    VMCACHE_IMAGE_DIR: IMAGE_DIR,
    VMCACHE_CONFIG: cfg,
  };
  return { env, root, cfg, endpoint, cliEnv, ...runtimeCli(root, cliEnv) };
}
