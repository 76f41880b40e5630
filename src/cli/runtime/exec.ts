import { readFileSync, statfsSync } from 'node:fs';
import { isVmcError, messageOf, VmcError } from '../../errors.js';
import { readBundle } from '../../oci/bundle.js';
import { formatEnv, parseEnv } from '../../oci/env.js';
import { parseProcess } from '../../oci/process.js';
import { At } from '../../oci/validate.js';
import { signalExitCode } from '../../platform/signals.js';
import { relayStdin } from '../../platform/streams.js';
import { rawMode, terminalPort } from '../../platform/terminal.js';
import type { ExecProcess } from '../../protocol/agent/messages.js';
import type { ControlClient } from '../../protocol/control/client.js';
import { execProcessOf } from '../../sandbox/process.js';
import type { VerbResult } from '../exit.js';
import { connectShim, type RuntimeContext, requireStatus, writePidFile } from './common.js';
import { rerunOnConsole } from './console.js';
import { REPORT_FD, type Report, sendReport, spawnReporting } from './detached.js';
import { RELAYED_SIGNALS } from './shim.js';

/** Options of `exec` (runc's, plus the internal ones a detached exec passes to its relay). */
interface ExecOptions {
  process?: string;
  tty?: boolean;
  consoleSocket?: string;
  detach?: boolean;
  pidFile?: string;
  cwd?: string;
  env?: string[];
  user?: string;
  /** internal: the resolved process, as JSON */
  processJson?: string;
  /** internal: report "started" on this fd */
  reportFd?: string;
}

/**
 * The process to exec: `--process FILE` (an OCI process object), or the container's own process with `ARGS`,
 * `--env`, `--cwd` and `--user` applied (as runc does). Invalid input names the file and JSON path.
 */
export function execProcess(
  ctx: RuntimeContext,
  id: string,
  args: string[],
  o: ExecOptions,
): { process: ExecProcess; terminal: boolean } {
  const s = ctx.store.read(id);
  let p: ExecProcess = { ...execProcessOf(readBundle(s.bundle, (p) => statfsSync(p))), args };
  let terminal = o.tty === true;
  if (o.process) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(o.process, 'utf8'));
    } catch (e) {
      throw new VmcError(
        'VMC_ERR_OCI_INVALID',
        `${o.process}: not a readable JSON file (${(e as Error).message})`,
      );
    }
    const a = new At(json, '', o.process);
    a.object();
    if (a.get('terminal').optional((t) => t.bool())) terminal = true;
    const proc = parseProcess(a, o.process, 'exec');
    p = { ...proc, env: formatEnv(proc.env) };
  }
  if (o.cwd) p.cwd = o.cwd;
  if (o.env?.length) p.env = [...p.env, ...formatEnv(parseEnv(o.env, '--env'))];
  if (o.user) {
    const m = /^([0-9]+)(?::([0-9]+))?$/.exec(o.user);
    if (!m)
      throw new VmcError('VMC_ERR_CLI_USAGE', `--user must be UID[:GID], got ${JSON.stringify(o.user)}`);
    p.uid = Number(m[1]);
    p.gid = m[2] === undefined ? p.gid : Number(m[2]);
  }
  if (p.args.length === 0 || p.args[0] === '')
    throw new VmcError('VMC_ERR_CLI_USAGE', 'exec needs a command (after --) or --process FILE with args');
  return { process: p, terminal };
}

/**
 * `vmcache exec ID [--process F] [--detach --pid-file F] -- ARGS`: runs another process in a running container.
 * In the foreground this process relays its stdio and signals and exits with the process's status. With
 * `--detach` a relay process (a descendant of the caller, its pid in `--pid-file`) does that instead.
 */
export async function exec(
  ctx: RuntimeContext,
  id: string,
  args: string[],
  o: ExecOptions,
): Promise<VerbResult> {
  const report = (r: Report) => {
    if (o.reportFd) sendReport(Number(o.reportFd), r);
  };
  // A detached exec's parent waits for this report: give it the reason, not just "exited".
  const reportFailure = (err: unknown): void =>
    report({
      ok: false,
      code: isVmcError(err) ? err.code : 'VMC_ERR_CONTAINER_START',
      message: messageOf(err),
    });
  try {
    requireStatus(ctx, id, 'exec', ['running']);
  } catch (err) {
    reportFailure(err);
    throw err;
  }
  const { process: proc, terminal } = o.processJson
    ? { process: JSON.parse(o.processJson) as ExecProcess, terminal: o.tty === true }
    : execProcess(ctx, id, args, o);
  const relay = ['exec', ...(terminal ? ['--tty'] : []), '--process-json', JSON.stringify(proc), id];
  if (terminal && !o.consoleSocket && (o.detach || !process.stdin.isTTY)) {
    const err = new VmcError(
      'VMC_ERR_CLI_USAGE',
      `exec with a terminal needs --console-socket${o.detach ? ' when detached' : ' (stdin is not a terminal)'}`,
    );
    reportFailure(err);
    throw err;
  }
  if (o.detach) {
    const pid = await spawnReporting(
      ctx,
      ['exec', '--report-fd', String(REPORT_FD), ...relay.slice(1)],
      'the exec relay exited before starting the process',
      terminal ? o.consoleSocket : undefined,
    );
    if (o.pidFile) writePidFile(o.pidFile, pid);
    return 0;
  }
  // In the foreground with a console socket: this process waits while its copy relays on the pty.
  if (terminal && o.consoleSocket) return rerunOnConsole(ctx, o.consoleSocket, relay);
  let c: ControlClient;
  try {
    c = await connectShim(ctx, id);
  } catch (err) {
    reportFailure(err);
    throw err;
  }
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    c.onEvent = (ev) => {
      if (ev.t === 'out')
        (ev.fd === 1 ? process.stdout : process.stderr).write(Buffer.from(ev.data, 'base64'));
      else if (ev.t === 'exit') resolve(ev);
    };
    c.onClose = () => resolve({ code: null, signal: 'SIGKILL' });
  });
  const tty = terminal ? terminalPort(process.stdout) : undefined;
  try {
    await c.request({ t: 'exec', pid: process.pid, process: proc, ...(tty ? { terminal: tty.size() } : {}) });
  } catch (err) {
    c.close();
    reportFailure(err);
    throw err;
  }
  report({ ok: true });
  // On a terminal, keys go to the process's pty as typed, and a window change is a resize, not a signal.
  const restore = tty ? rawMode(process.stdin) : () => {};
  tty?.onResize((size) => c.send({ t: 'resize', ...size }));
  relayStdin(process.stdin, c.stdin());
  for (const sig of RELAYED_SIGNALS)
    if (!(tty && sig === 'SIGWINCH')) process.on(sig, () => c.send({ t: 'signal', signal: sig }));
  const st = await exited;
  restore();
  c.close();
  process.stdin.destroy();
  return st.code ?? signalExitCode(st.signal ?? 'SIGKILL');
}
