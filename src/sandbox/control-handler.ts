import { VmcError } from '../errors.js';
import type { Paths } from '../platform/paths.js';
import { terminalPort } from '../platform/terminal.js';
import type { CgroupStats } from '../protocol/agent/messages.js';
import type { ControlReply, ResourceUpdate } from '../protocol/control/messages.js';
import {
  type ControlHandler,
  ControlServer,
  type ExecSession,
  type HandledRequest,
} from '../protocol/control/server.js';
import { controlSocketPath } from '../protocol/control/socket-path.js';
import type { Shim } from './shim-interface.js';
import type { StateStore } from './state-store.js';

/** An `exec` request as a shim gets it. */
export type ExecControlRequest = Extract<HandledRequest, { t: 'exec' }>;

/** A shim as its control socket reaches it. */
export interface ControlledShim extends Shim {
  readonly id: string;
  /** Host pids that stand for the container's processes (`ps`). */
  pids(): number[];
  /** Starts a process in the running container for one connection; resolves once it runs (see relayExec). */
  exec(req: ExecControlRequest, reply: (r: ControlReply) => void, end: () => void): Promise<ExecSession>;
  /** A pod member's sandbox: the VM's owner, which alone can pause it or signal its containers' cgroups. */
  readonly sandboxId?: string;
  pause?(): Promise<void>;
  resume?(): Promise<void>;
  /** Signals every process of container `name` (this one or a member of this sandbox); the agent's answer. */
  signalAll?(name: string, signal: string): Promise<unknown>;
  /** New limits for the guest cgroup of container `name` (this one or a member): only the VM's owner. */
  update?(name: string, r: ResourceUpdate): Promise<void>;
  /** The usage and limits of container `name`'s guest cgroup: only the VM's owner. */
  stats?(name: string): Promise<CgroupStats>;
}

/** Listens on `shim`'s control socket (under the state root and run directory of `deps`). */
export function serveControl(
  shim: ControlledShim,
  deps: { paths: Paths; store: StateStore },
): Promise<ControlServer> {
  return ControlServer.listen(
    controlSocketPath(deps.paths.runDir, deps.store.root, shim.id),
    controlHandler(shim),
  );
}

/** The handler of `shim`'s control socket: one request → one shim operation. */
export function controlHandler(shim: ControlledShim): ControlHandler {
  return async (req, reply, end) => {
    switch (req.t) {
      case 'start':
        // The shim's own stdio is the container's (inherited from the caller of `create`, or the pty whose
        // master went to `--console-socket`).
        await shim.start({
          stdin: process.stdin,
          stdout: process.stdout,
          stderr: process.stderr,
          terminal: terminalPort(process.stdout),
        });
        return;
      case 'kill':
        await shim.kill(req.signal);
        return;
      case 'pause':
      case 'resume': {
        const op = shim[req.t];
        if (!op)
          throw new VmcError(
            'VMC_ERR_OCI_UNSUPPORTED',
            `container ${shim.id} shares the VM of sandbox ${shim.sandboxId}: ${req.t} the sandbox instead`,
          );
        await op.call(shim);
        return;
      }
      case 'ps':
        reply({ t: 'ok', result: { pids: shim.pids() } });
        return 'replied';
      case 'signal-all': {
        if (!shim.signalAll)
          throw new VmcError(
            'VMC_ERR_INVALID_STATE',
            `container ${shim.id} does not hold a VM: ask its sandbox ${shim.sandboxId}`,
          );
        reply({ t: 'ok', result: await shim.signalAll(req.name, req.signal) });
        return 'replied';
      }
      case 'update':
      case 'stats': {
        const owner = `container ${shim.id} does not hold a VM: ask its sandbox ${shim.sandboxId}`;
        if (req.t === 'update') {
          if (!shim.update) throw new VmcError('VMC_ERR_INVALID_STATE', owner);
          await shim.update(req.name, req.resources);
          return;
        }
        if (!shim.stats) throw new VmcError('VMC_ERR_INVALID_STATE', owner);
        reply({ t: 'ok', result: await shim.stats(req.name) });
        return 'replied';
      }
      case 'exec':
        return shim.exec(req, reply, end);
    }
  };
}
