import { close, closeSync, constants, open, openSync, statSync } from 'node:fs';
import { Socket } from 'node:net';
import { PassThrough, type Readable, Writable } from 'node:stream';
import { messageOf, VmcError } from '../errors.js';

/** The stdio paths containerd names for a process (CreateTaskRequest, ExecProcessRequest): FIFOs, or empty. */
export interface IoPaths {
  stdin: string;
  stdout: string;
  stderr: string;
}

/** A process's stdio as the shim holds it: streams onto containerd's FIFOs, and the ends it controls. */
export interface TaskIo {
  readonly stdin: Readable;
  readonly stdout: Writable;
  readonly stderr: Writable;
  /** CloseIO: the process's stdin reaches EOF (as it does when containerd closes the FIFO). Idempotent. */
  closeStdin(): void;
  /** Closes every FIFO end the shim holds (after the process's last output): containerd's readers see EOF. */
  close(): void;
}

/** Opens a task's stdio, or throws; injected so that the Task service can be tested without FIFOs. */
export type IoOpener = (paths: IoPaths) => TaskIo;

/** A writable that discards: the stdio of a process containerd gave no path for (CRI's sandbox: null IO). */
function discard(): Writable {
  return new Writable({ write: (_c, _e, cb) => cb() });
}

/**
 * Opens an output FIFO without blocking and wraps it in a libuv pipe handle. O_RDWR on a FIFO never blocks
 * (containerd has opened its reader before Create, but a reader that went away must not stall the daemon).
 */
function openOut(path: string, what: string): Socket {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
  } catch (err) {
    throw new VmcError('VMC_ERR_SHIM_IO', `${what} ${path}: ${messageOf(err)}`, { cause: err });
  }
  const s = new Socket({ fd, readable: false, writable: true });
  // containerd's reader going away must not take the daemon down: the process's exit says the rest.
  s.on('error', () => undefined);
  return s;
}

/**
 * Relays the stdin FIFO at `path` into `to` until containerd's writer closes it (EOF: ctr closes the FIFO
 * when its own stdin ends, before it could send CloseIO). The FIFO is opened for reading only, so that EOF
 * can come, and with a blocking open on libuv's thread pool: a non-blocking reader would read EOF at once if
 * containerd's writer is not open yet. `cancel` ends a pending open (by opening the writer side once) and
 * the relay.
 */
function relayStdinFifo(path: string, to: PassThrough): { cancel(): void } {
  try {
    statSync(path);
  } catch (err) {
    throw new VmcError('VMC_ERR_SHIM_IO', `stdin ${path}: ${messageOf(err)}`, { cause: err });
  }
  let socket: Socket | null = null;
  let cancelled = false;
  // The callback form gives a bare fd: a FileHandle would close its fd when collected, under the socket
  // that owns it by then (and so, later, under whatever reused the number).
  open(path, constants.O_RDONLY, (err, fd) => {
    if (err) return void to.end();
    if (cancelled) return void close(fd, () => undefined);
    socket = new Socket({ fd, readable: true, writable: false });
    socket.on('error', () => to.end());
    socket.pipe(to);
  });
  return {
    cancel() {
      if (cancelled) return;
      cancelled = true;
      if (socket) {
        socket.unpipe(to);
        socket.destroy();
        return;
      }
      try {
        closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK)); // wakes the pending open
      } catch {
        // no pending open (it failed, or the FIFO is gone)
      }
    },
  };
}

/**
 * Opens the FIFOs containerd made for a process (each path may be empty: that stream is null). stdin is
 * relayed through a PassThrough, which the FIFO's EOF or CloseIO ends; nothing here blocks the daemon.
 */
export const openTaskIo: IoOpener = (paths) => {
  const opened: Socket[] = [];
  try {
    const stdin = new PassThrough();
    const relay = paths.stdin ? relayStdinFifo(paths.stdin, stdin) : null;
    if (!relay) stdin.end();
    const out = (p: string, what: string): Writable => {
      if (!p) return discard();
      const s = openOut(p, what);
      opened.push(s);
      return s;
    };
    const stdout = out(paths.stdout, 'stdout');
    // With one FIFO for both (a terminal's), stdout's stream serves stderr too.
    const stderr = paths.stderr && paths.stderr === paths.stdout ? stdout : out(paths.stderr, 'stderr');
    let stdinClosed = false;
    return {
      stdin,
      stdout,
      stderr,
      closeStdin() {
        if (stdinClosed) return;
        stdinClosed = true;
        relay?.cancel();
        stdin.end();
      },
      close() {
        this.closeStdin();
        for (const s of opened) s.end();
      },
    };
  } catch (err) {
    for (const s of opened) s.destroy();
    throw err;
  }
};
