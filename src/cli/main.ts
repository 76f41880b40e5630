/** vmcache command-line entry point. The only module that calls process.exit. */
import { Command, CommanderError } from 'commander';
import { isVmcError, messageOf } from '../errors.js';
import { positiveInt } from './common.js';
import { ExitCode, type GlobalOptions, makeContext } from './context.js';
import { doctor } from './doctor.js';
import { factoryDestroy, factoryInit, factoryStatus } from './factory-cmd.js';
import { imageBuild } from './image-build.js';
import { vmGc, vmList } from './vm-list.js';
import { vmRun } from './vm-run.js';

const VERSION = '0.1.0';

// `vmcache ... | head` closes stdout early: that is not an error worth a stack trace.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

/** Wraps a verb: global options and the verb's own Command in, exit code out; errors printed with their code. */
function run(
  action: (g: GlobalOptions, cmd: Command) => Promise<number> | number,
  failCode: number = ExitCode.Failure,
) {
  return async (...args: unknown[]) => {
    const cmd = args[args.length - 1] as Command;
    const g = cmd.optsWithGlobals() as GlobalOptions;
    try {
      process.exitCode = await action(g, cmd);
    } catch (err) {
      const code = isVmcError(err) ? err.code : 'UNEXPECTED';
      process.stderr.write(`vmcache: error: ${messageOf(err)} [${code}]\n`);
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
  .option(
    '--config <file>',
    'configuration.toml (default: $VMCACHE_CONFIG, then /etc/vmcache/configuration.toml)',
  )
  .exitOverride();

program
  .command('doctor')
  .description('check host prerequisites')
  .action(run(async (g) => doctor(makeContext(g))));

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
