import { mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { isVmcError, messageOf } from '../../errors.js';
import { encodeFrame, FrameDecoder } from '../agent/framing.js';
import type { WindowSize } from '../agent/messages.js';
import { type ControlReply, type ControlRequest, parseControlRequest } from './messages.js';

/** A process started through the control channel, as its connection sees it (stdin, signals, abandonment). */
export interface ExecSession {
  write(data: Buffer): Promise<void>;
  end(): Promise<void>;
  kill(signal: string): Promise<void>;
  /** Sets the window size of the process's terminal (an exec with `terminal`). */
  resize(size: WindowSize): Promise<void>;
  /** The connection that stood for the process is gone. */
  abandon(): void;
}

/** Requests a handler answers; the per-process ones (stdin, close-stdin, signal, resize) go to its session. */
export type HandledRequest = Exclude<
  ControlRequest,
  { t: 'stdin' } | { t: 'close-stdin' } | { t: 'signal' } | { t: 'resize' }
>;

/**
 * Handles one request. Replies through `reply` (`ok` is sent for it when it resolves with nothing and sent
 * nothing itself); an `exec` resolves with the session of the process it started.
 */
export type ControlHandler = (
  req: HandledRequest,
  reply: (r: ControlReply) => void,
  end: () => void,
) => Promise<ExecSession | 'replied' | undefined>;

/** The listening side of a control socket; each connection may carry one exec session. */
export class ControlServer {
  private constructor(
    private readonly server: Server,
    readonly path: string,
  ) {}

  /** Listens on `path` (a stale socket of a crashed process is replaced). */
  static async listen(path: string, handler: ControlHandler): Promise<ControlServer> {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    rmSync(path, { force: true });
    const server = createServer((sock) => serveConnection(sock, handler));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, resolve);
    });
    return new ControlServer(server, path);
  }

  /** Stops listening and removes the socket. Idempotent. */
  async close(): Promise<void> {
    await new Promise((r) => this.server.close(r));
    rmSync(this.path, { force: true });
  }
}

function serveConnection(sock: Socket, handler: ControlHandler): void {
  const decoder = new FrameDecoder();
  const reply = (r: ControlReply) => {
    if (!sock.destroyed && sock.writable) sock.write(encodeFrame(r));
  };
  // A frame that is not a valid request is the peer's protocol error, not a command-line mistake.
  const refuse = (message: string) => reply({ t: 'error', code: 'VMC_ERR_CONTROL_PROTOCOL', message });
  let session: ExecSession | null = null;
  // One exec a connection (what every client does): a second one's session would replace the first, which
  // would then never be abandoned, its process orphaned (found by fuzzing). Reset when an exec fails.
  let execing = false;
  let closed = false;
  sock.on('error', () => sock.destroy());
  sock.on('close', () => {
    closed = true;
    session?.abandon();
  });
  sock.on('data', (chunk: Buffer) => {
    for (const f of decoder.push(chunk)) {
      const parsed = f.ok ? parseControlRequest(f.value) : { ok: false as const, error: f.reason };
      if (!parsed.ok) {
        refuse(parsed.error);
        continue;
      }
      const req = parsed.req;
      if (req.t === 'stdin' || req.t === 'close-stdin' || req.t === 'signal' || req.t === 'resize') {
        const s = session;
        if (!s) continue;
        const done =
          req.t === 'stdin'
            ? s.write(Buffer.from(req.data, 'base64'))
            : req.t === 'signal'
              ? s.kill(req.signal)
              : req.t === 'resize'
                ? s.resize({ rows: req.rows, cols: req.cols })
                : s.end();
        done.catch(() => undefined);
        continue;
      }
      if (req.t === 'exec') {
        if (execing) {
          refuse('exec: this connection carries one already');
          continue;
        }
        execing = true;
      }
      handler(req, reply, () => sock.end()).then(
        (r) => {
          if (r === undefined) reply({ t: 'ok' });
          else if (r !== 'replied') {
            session = r;
            // The peer left while the process was starting: nobody can reach it now, so it is abandoned too.
            if (closed) r.abandon();
          }
        },
        (err: unknown) => {
          if (req.t === 'exec') execing = false;
          reply({
            t: 'error',
            code: isVmcError(err) ? err.code : 'VMC_ERR_CONTAINER_START',
            message: messageOf(err),
          });
        },
      );
    }
  });
}
