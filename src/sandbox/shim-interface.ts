import type { Readable, Writable } from 'node:stream';
import type { RuntimeConfig } from '../config/config.js';
import type { TerminalPort } from '../platform/terminal.js';
import type { ExitStatus } from '../protocol/agent/client.js';
import type { VmDeps } from '../vm/vm.js';
import type { ShimStatus } from './lifecycle.js';
import type { StateStore } from './state-store.js';

/** What the container layer needs besides the VM dependencies. */
export interface SandboxDeps extends VmDeps {
  config: RuntimeConfig;
  store: StateStore;
}

/** The stdio the container's process is attached to (the shim's own, inherited from the caller). */
export interface Stdio {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  /** Set when the stdio is a terminal: its size now, and its changes (a `process.terminal` container's pty follows). */
  terminal?: TerminalPort;
}

/** What the host-side process of a container does, whichever kind of container it is. */
export interface Shim {
  readonly status: ShimStatus;
  /** Resolves with the container process's exit status once the container has stopped and is cleaned up. */
  readonly stopped: Promise<ExitStatus>;
  /** Starts the container's process with `stdio` attached. Only valid when created. */
  start(stdio: Stdio): Promise<void>;
  /** Delivers a signal (a name); before start, stops the container. */
  kill(signal: string): Promise<void>;
}
