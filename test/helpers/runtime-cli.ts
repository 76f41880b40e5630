import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { run, VMCACHE } from './cli.js';

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
