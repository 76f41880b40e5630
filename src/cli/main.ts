/** vmcache command-line entry point. The only module that calls process.exit. */
import { Command, CommanderError, Option } from 'commander';
import { MISS_POLICIES } from '../config/schema.js';
import { isVmcError, messageOf, VmcError } from '../errors.js';
import { positiveInt } from './common.js';
import { ExitCode, type GlobalOptions, makeContext } from './context.js';
import { doctor } from './doctor.js';
import type { ExitNow, VerbResult } from './exit.js';
import { factoryDestroy, factoryInit, factoryStatus } from './factory-cmd.js';
import { imageBuild } from './image-build.js';
import { fileLogger } from './log.js';
import { runtimeContext } from './runtime/common.js';
import { create } from './runtime/create.js';
import { del } from './runtime/delete.js';
import { events } from './runtime/events.js';
import { exec } from './runtime/exec.js';
import { features } from './runtime/features.js';
import { kill, pause, resume } from './runtime/kill.js';
import { run as runContainer } from './runtime/run.js';
import { shimMain } from './runtime/shim.js';
import { spec } from './runtime/spec.js';
import { start } from './runtime/start.js';
import { list, ps, state } from './runtime/state.js';
import { update } from './runtime/update.js';
import { vmGc, vmList } from './vm-list.js';
import { vmRun } from './vm-run.js';

const VERSION = '0.1.0';

// `vmcache ... | head` closes stdout early: that is not an error worth a stack trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

/** Ends the process at once, as a verb asked (see ExitNow). */
function endNow(e: ExitNow): never {
  if (e.signal) {
    process.removeAllListeners(e.signal);
    try {
      process.kill(process.pid, e.signal);
    } catch {
      // not a signal this process can receive
    }
  }
  process.exit(e.code);
}

/** Wraps a verb: global options and the verb's own Command in, exit code out; errors printed with their code. */
function run(
  action: (g: GlobalOptions, cmd: Command) => Promise<VerbResult> | VerbResult,
  failCode: number = ExitCode.Failure,
) {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const g = cmd.optsWithGlobals() as GlobalOptions;
    try {
      const result = await action(g, cmd);
      if (typeof result !== 'number') endNow(result);
      process.exitCode = result;
    } catch (err) {
      const code = isVmcError(err) ? err.code : 'UNEXPECTED';
      process.stderr.write(`vmcache: error: ${messageOf(err)} [${code}]\n`);
      // containerd's shim reads the reason a runtime command failed from the last error line of --log.
      if (g.log) {
        try {
          fileLogger(g.log, g.logFormat === 'json' ? 'json' : 'text', 'error').error(
            { code },
            messageOf(err),
          );
        } catch {
          // the log is not writable: stderr has it
        }
      }
      if (g.debug && err instanceof Error) process.stderr.write(`${err.stack}\n`);
      process.exitCode = isVmcError(err, 'VMC_ERR_CLI_USAGE') ? ExitCode.Usage : failCode;
    }
  };
}

const program = new Command('vmcache')
  .description('Pre-booted QEMU VMs handed to sandbox runtimes in milliseconds')
  .version(VERSION, '-v, --version')
  .option('--debug', 'debug logging')
  .option('--log-format <format>', 'text or json', 'text')
  .option('--root <dir>', 'container state directory of the OCI runtime verbs (default: /run/vmcache)')
  .option('--log <file>', 'write log records to FILE instead of stderr (as runc)')
  .option('--systemd-cgroup', 'accepted for runc compatibility (cgroups belong to the VM)')
  .option(
    '--config <file>',
    'configuration.toml (default: $VMCACHE_CONFIG, then /etc/vmcache/configuration.toml)',
  )
  .exitOverride();

program
  .command('doctor')
  .description('check host prerequisites')
  .action(run(async (g) => doctor(makeContext(g, { stderr: true, tolerateConfigError: true }))));

program
  .command('image')
  .description('guest image')
  .command('build')
  .description('build the guest image (kernel, initramfs, root disk); a no-op when up to date')
  .action(run(async (g) => imageBuild(makeContext(g))));

const vm = program.command('vm').description('single VMs');
vm.command('run')
  .description("boot a VM, run CMD in it with stdio attached, destroy the VM; exits with CMD's status")
  .option('--cpus <n>', 'vCPUs', positiveInt('--cpus'))
  .option('--memory <MiB>', 'memory in MiB', positiveInt('--memory'))
  .option('--timings', 'print boot/command/destroy timings to stderr')
  .option('--no-cache', 'boot a VM directly even when the configuration enables the VM cache')
  .option('--verbose', 'say where the VM came from (cache or cold boot) and how long it took')
  .addOption(
    new Option(
      '--miss-policy <policy>',
      "when the cache has no VM ready: wait, fail at once, or cold-boot one (default: the server's [cache] miss_policy)",
    ).choices(MISS_POLICIES),
  )
  .argument('<cmd...>', 'command and arguments (put them after --)')
  .action(run(async (g, cmd) => vmRun(makeContext(g), cmd.args, cmd.opts()), ExitCode.RuntimeError));
vm.command('list')
  .description('list the VMs recorded on this host')
  .option('--json', 'JSON output')
  .action(run((g, cmd) => vmList(makeContext(g), cmd.opts())));
vm.command('gc')
  .description('stop orphaned VMs (owner gone) and remove stale records')
  .option(
    '--unowned',
    'also stop VMs nobody owns (handed to a Kata-style client, or released and never adopted)',
  )
  .action(run(async (g, cmd) => vmGc(makeContext(g), cmd.opts())));

const factory = program.command('factory').description('the VM cache (Kata VMCache)');
factory
  .command('init')
  .description('run the VM cache server in the foreground (needs [factory] vm_cache_number > 0)')
  .action(run(async (g) => factoryInit(makeContext(g))));
factory
  .command('status')
  .description('the cache server and its idle VMs')
  .option('--json', 'JSON output')
  .action(run(async (g, cmd) => factoryStatus(makeContext(g), cmd.opts())));
factory
  .command('destroy')
  .description('ask the cache server to quit and wait until it is gone')
  .action(run(async (g) => factoryDestroy(makeContext(g))));

// ---- OCI runtime verbs (runc-compatible) --------------------------------------------------------------
const rt = (g: Parameters<typeof runtimeContext>[0]) => runtimeContext(g);
const PRESERVE_FDS = 'only 0: file descriptors of this host cannot be passed into the VM';
/** runc's `--preserve-fds N` hands N more fds to the container's process; in a VM that cannot be done. */
function refuseFds<T extends Record<string, unknown>>(opts: T): T {
  if (opts.preserveFds !== undefined && opts.preserveFds !== '0')
    throw new VmcError(
      'VMC_ERR_OCI_UNSUPPORTED',
      `--preserve-fds ${JSON.stringify(opts.preserveFds)}: the container's process runs in a VM, where file ` +
        'descriptors of this host cannot follow it; pass data through stdio, a mount or the network',
    );
  return opts;
}
program
  .command('create')
  .description('create a container from an OCI bundle; its process waits for start')
  .argument('<id>')
  .option('-b, --bundle <dir>', 'bundle directory', '.')
  .option('--pid-file <file>', "write the container's pid (its host-side process) here")
  .option('--console-socket <path>', "where the terminal's pty master goes when the bundle asks for one")
  .option('--no-pivot', 'accepted for runc compatibility')
  .option('--no-new-keyring', 'accepted for runc compatibility')
  .option('--preserve-fds <n>', PRESERVE_FDS)
  .action(run(async (g, cmd) => create(rt(g), cmd.args[0]!, refuseFds(cmd.opts()))));
program
  .command('run')
  .description('create and start a container; in the foreground, exit with its status and delete it')
  .argument('<id>')
  .option('-b, --bundle <dir>', 'bundle directory', '.')
  .option('-d, --detach', 'return once started')
  .option('--pid-file <file>', "write the container's pid here")
  .option('--console-socket <path>', "where the terminal's pty master goes when the bundle asks for one")
  .option('--no-pivot', 'accepted for runc compatibility')
  .option('--no-new-keyring', 'accepted for runc compatibility')
  .option('--preserve-fds <n>', PRESERVE_FDS)
  .action(
    run(async (g, cmd) => runContainer(rt(g), cmd.args[0]!, refuseFds(cmd.opts())), ExitCode.RuntimeError),
  );
program
  .command('start')
  .description("start a created container's process")
  .argument('<id>')
  .action(run(async (g, cmd) => start(rt(g), cmd.args[0]!)));
program
  .command('state')
  .description('print the OCI state of a container')
  .argument('<id>')
  .action(run(async (g, cmd) => state(rt(g), cmd.args[0]!)));
program
  .command('kill')
  .description("send a signal (name or number, default SIGTERM) to the container's process")
  .argument('<id>')
  .argument('[signal]')
  .option(
    '-a, --all',
    'every process of the container (its guest cgroup), also after its main process exited',
  )
  .action(run(async (g, cmd) => kill(rt(g), cmd.args[0]!, cmd.args[1], cmd.opts())));
program
  .command('delete')
  .description('delete a stopped container (--force: also a running one); frees its VM')
  .argument('<id>')
  .option('-f, --force', 'kill it first if it runs; no error if it does not exist')
  .action(run(async (g, cmd) => del(rt(g), cmd.args[0]!, cmd.opts())));
program
  .command('pause')
  .description("freeze a container (its VM's vCPUs)")
  .argument('<id>')
  .action(run(async (g, cmd) => pause(rt(g), cmd.args[0]!)));
program
  .command('resume')
  .description('thaw a paused container')
  .argument('<id>')
  .action(run(async (g, cmd) => resume(rt(g), cmd.args[0]!)));
program
  .command('exec')
  .description('run another process in a running container')
  .argument('<id>')
  .argument('[args...]', 'command and arguments (after --)')
  .option('-p, --process <file>', 'an OCI process JSON file')
  .option('-t, --tty', "give the process a terminal (the caller's own, or a pty for --console-socket)")
  .option('-d, --detach', 'return once started; a relay process stands for it')
  .option('--pid-file <file>', 'write the pid of the process standing for it')
  .option('--cwd <dir>', 'working directory')
  .option('-e, --env <KEY=VALUE>', 'environment (repeatable)', (v: string, a: string[] = []) => [...a, v])
  .option('-u, --user <uid[:gid]>', 'user')
  .option('--console-socket <path>', "where the terminal's pty master goes (with -t)")
  .option('--preserve-fds <n>', PRESERVE_FDS)
  .addOption(new Option('--process-json <json>').hideHelp())
  .addOption(new Option('--report-fd <fd>').hideHelp())
  .action(
    run(
      async (g, cmd) => exec(rt(g), cmd.args[0]!, cmd.args.slice(1), refuseFds(cmd.opts())),
      ExitCode.RuntimeError,
    ),
  );
program
  .command('update')
  .description("new limits for a running container's guest cgroup (more memory is hot-plugged into its VM)")
  .argument('<id>')
  .option(
    '-r, --resources <file>',
    "runc's LinuxResources JSON (- for stdin): memory, cpu quota/period, pids",
  )
  .option('--memory <bytes>', 'memory limit (suffix k, m or g; -1: none)')
  .option('--cpu-quota <us>', 'CPU time per period, µs (-1: none)')
  .option('--cpu-period <us>', 'CPU period, µs')
  .option('--pids-limit <n>', 'most processes (-1: none)')
  .action(run(async (g, cmd) => update(rt(g), cmd.args[0]!, cmd.opts())));
program
  .command('events')
  .description(
    "the container's cgroup stats in runc's JSON: every --interval until it stops, or once (--stats)",
  )
  .argument('<id>')
  .option('--stats', 'print the stats once and exit')
  .option('--interval <duration>', 'time between stats (e.g. 5s, 500ms)', '5s')
  .action(run(async (g, cmd) => events(rt(g), cmd.args[0]!, cmd.opts())));
program
  .command('list')
  .description('list containers')
  .option('-f, --format <format>', 'table or json', 'table')
  .option('-q, --quiet', 'ids only')
  .action(run(async (g, cmd) => list(rt(g), cmd.opts())));
program
  .command('ps')
  .description("host pids standing for the container's processes")
  .argument('<id>')
  .option('-f, --format <format>', 'table or json', 'table')
  .action(run(async (g, cmd) => ps(rt(g), cmd.args[0]!, cmd.opts())));
program
  .command('spec')
  .description('write a default config.json (as runc spec)')
  .option('-b, --bundle <dir>', 'bundle directory', '.')
  .action(run(async (_g, cmd) => spec(cmd.opts())));
program
  .command('features')
  .description('what this runtime implements, as JSON (as runc features), with what the VM boundary replaces')
  .action(run(async () => features((t) => process.stdout.write(t))));
program
  .command('shim', { hidden: true })
  .description("internal: the container's host-side process, started by create")
  .argument('<id>')
  .action(run(async (g, cmd) => shimMain(runtimeContext(g, { stderr: false }), cmd.args[0]!)));

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? 0 : ExitCode.Usage;
  } else {
    process.stderr.write(`vmcache: error: ${messageOf(err)}\n`);
    process.exitCode = ExitCode.Failure;
  }
}
