import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { loadConfig, type RuntimeConfig } from '../config/config.js';
import { systemClock } from '../platform/clock.js';
import { runCommand } from '../platform/command.js';
import { type Logger, nullLogger } from '../platform/logger.js';
import { defaultPaths, type Paths } from '../platform/paths.js';
import type { VmDeps } from '../vm/vm.js';
import { fileLogger, lineLogger } from './log.js';

/** Exit codes of the CLI. `vm run` otherwise exits with the guest command's status. */
export const ExitCode = {
  Ok: 0,
  Failure: 1,
  Usage: 2,
  /** The runtime itself failed (as docker/podman use 125), so it is never confused with the command's status. */
  RuntimeError: 125,
} as const;

/** Global options every verb sees. */
export interface GlobalOptions {
  debug?: boolean;
  logFormat?: 'text' | 'json';
  config?: string;
  /** runc's `--log FILE`: log records go there instead of stderr. */
  log?: string;
  /** runc's `--root DIR`: where container state lives. */
  root?: string;
  /** Accepted for runc compatibility; cgroups belong to the VM. */
  systemdCgroup?: boolean;
}

/** Where the configuration is looked for when neither --config nor VMCACHE_CONFIG names one. */
export const DEFAULT_CONFIG_FILE = '/etc/vmcache/configuration.toml';

/** Everything a verb needs, built once from the process environment. */
export interface CliContext extends VmDeps {
  paths: Paths;
  /** Directory of the bundle (agent.mjs, guest-files/). */
  bundleDir: string;
  /** The validated configuration (built-in defaults when there is no file). */
  config: RuntimeConfig;
  /** Set only with `tolerateConfigError` (`doctor`): the file's error; `config` is then the built-in defaults. */
  configError?: Error;
  /** The configuration file looked at, or null when there is none. */
  configFile: string | null;
  /**
   * `VMCACHE_PHASES`: a file to which `vmcache run` (foreground) and `vm run` append their phase breakdown, one
   * JSON line each (the bench reads it); null when unset.
   */
  phasesFile: string | null;
  /** Prints a human-readable line to stderr. */
  say(line: string): void;
}

function findBundleDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const c of [here, resolve(here, '../../bundle')]) if (existsSync(join(c, 'agent.mjs'))) return c;
  return here;
}

/** Builds the context. The only place that reads the environment. */
export function makeContext(
  opts: GlobalOptions,
  use: { stderr: boolean; tolerateConfigError?: boolean } = { stderr: true },
): CliContext {
  const level = opts.debug ? 'debug' : 'warn';
  // With --log (runc's), records go to that file; a container's host-side process never writes to stderr,
  // which is the container's.
  const logger = opts.log
    ? fileLogger(opts.log, opts.logFormat === 'json' ? 'json' : 'text', level)
    : !use.stderr
      ? nullLogger
      : opts.logFormat === 'json'
        ? (pino({ level }, pino.destination({ dest: 2, sync: true })) as unknown as Logger)
        : lineLogger((line) => process.stderr.write(line), 'human', level);
  const paths = defaultPaths(process.env, process.getuid?.() ?? 0);
  const file =
    opts.config ??
    process.env.VMCACHE_CONFIG ??
    (existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : null);
  let config: RuntimeConfig;
  let configError: Error | undefined;
  try {
    config = loadConfig(file, paths.imageDir);
  } catch (e) {
    if (!use.tolerateConfigError || !(e instanceof Error)) throw e;
    configError = e;
    config = loadConfig(null, paths.imageDir);
  }
  for (const w of config.warnings) logger.warn({}, w);
  if (config.stateDir && !process.env.VMCACHE_RUN_DIR) paths.runDir = config.stateDir;
  return {
    paths,
    config,
    ...(configError ? { configError } : {}),
    configFile: file,
    phasesFile: process.env.VMCACHE_PHASES || null,
    clock: systemClock,
    logger,
    run: runCommand,
    bundleDir: findBundleDir(),
    say: use.stderr ? (line) => process.stderr.write(`${line}\n`) : () => {},
  };
}
