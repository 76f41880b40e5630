import { constants, openSync } from 'node:fs';
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
  /** CloseIO: the process's stdin reaches EOF (containerd's writer is done). Idempotent. */
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
 * Opens `path` without blocking and wraps it in a libuv pipe handle. O_RDWR on a FIFO never blocks and never
 * reads EOF before containerd's end has opened (a reader opened O_RDONLY|O_NONBLOCK would read EOF at once
 * while containerd's writer is still opening); EOF on stdin is CloseIO's job, as the Task API has it.
 */
function openFifo(path: string, what: string, dir: 'in' | 'out'): Socket {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
  } catch (err) {
    throw new VmcError('VMC_ERR_SHIM_IO', `${what} ${path}: ${messageOf(err)}`, { cause: err });
  }
  const s = new Socket({ fd, readable: dir === 'in', writable: dir === 'out' });
  // containerd's reader or writer going away must not take the daemon down: the process's exit says the rest.
  s.on('error', () => undefined);
  return s;
}

/**
 * Opens the FIFOs containerd made for a process (each path may be empty: that stream is null). stdin is
 * relayed through a PassThrough so that CloseIO can end it while the FIFO stays open; nothing here blocks.
 */
export const openTaskIo: IoOpener = (paths) => {
  const opened: Socket[] = [];
  try {
    const stdin = new PassThrough();
    let inFifo: Socket | null = null;
    if (paths.stdin) {
      inFifo = openFifo(paths.stdin, 'stdin', 'in');
      opened.push(inFifo);
      inFifo.pipe(stdin);
    } else stdin.end();
    const out = (p: string, what: string): Writable => {
      if (!p) return discard();
      const s = openFifo(p, what, 'out');
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
        inFifo?.unpipe(stdin);
        inFifo?.destroy();
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
