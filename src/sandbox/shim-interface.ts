import type { Readable, Writable } from 'node:stream';
import type { ExitStatus } from '../protocol/agent/client.js';

/** The stdio the container's process is attached to (the shim's own, inherited from the caller). */
export interface Stdio {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
}

/** What the host-side process of a container does, whichever kind of container it is. */
export interface Shim {
  readonly status: 'created' | 'running' | 'paused' | 'stopped';
  /** Resolves with the container process's exit status once the container has stopped and is cleaned up. */
  readonly stopped: Promise<ExitStatus>;
  /** Starts the container's process with `stdio` attached. Only valid when created. */
  start(stdio: Stdio): Promise<void>;
  /** Delivers a signal (a name); before start, stops the container. */
  kill(signal: string): Promise<void>;
}
