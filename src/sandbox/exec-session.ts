import { ended } from '../platform/streams.js';
import type { AgentProcess, ExitStatus } from '../protocol/agent/client.js';
import type { ControlReply } from '../protocol/control/messages.js';
import type { ExecSession } from '../protocol/control/server.js';

/**
 * Relays a guest process started for one control connection (`exec`): its output as `out` events, then its
 * exit as one `exit` event, after which the connection is ended (`end`) and `finished` called, once. The
 * process counts as killed when the agent loses it or the sandbox stops (`stopped`: its VM is gone). The
 * session returned is what the connection drives: stdin, signals, and abandonment (the relay that stood for
 * the process is gone, so is the process).
 */
export function relayExec(
  proc: AgentProcess,
  reply: (r: ControlReply) => void,
  end: () => void,
  stopped: Promise<unknown>,
  finished: () => void,
): ExecSession {
  proc.stdout.on('data', (d: Buffer) => reply({ t: 'out', fd: 1, data: d.toString('base64') }));
  proc.stderr.on('data', (d: Buffer) => reply({ t: 'out', fd: 2, data: d.toString('base64') }));
  const out = Promise.all([ended(proc.stdout), ended(proc.stderr)]);
  let done = false;
  const finish = (st: ExitStatus) => {
    if (done) return;
    done = true;
    finished();
    reply({ t: 'exit', ...st });
    end();
  };
  proc.wait().then(
    (st) => out.then(() => finish(st)),
    () => finish({ code: null, signal: 'SIGKILL' }),
  );
  void stopped.then(() => finish({ code: null, signal: 'SIGKILL' }));
  return {
    write: (d) => proc.write(d),
    end: () => proc.end(),
    kill: (sig) => proc.kill(sig),
    resize: (size) => proc.resize(size),
    abandon: () => {
      if (!done) void proc.kill('SIGKILL').catch(() => undefined);
    },
  };
}
