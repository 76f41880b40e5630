import WebSocket, { type RawData } from 'ws';

/**
 * kubelet's remotecommand protocol over WebSocket, version 4 with binary frames: what containerd 1.6's CRI
 * streaming server (k8s.io/kubelet/pkg/cri/streaming) accepts besides SPDY. Version 4 is the first whose status
 * channel carries a JSON Status with the exit code.
 */
export const EXEC_PROTOCOL = 'v4.channel.k8s.io';

/** Each binary message's first byte: the stream it belongs to (stdin, stdout and stderr are POSIX's fds). */
const Channel = { stdin: 0, stdout: 1, stderr: 2, status: 3, resize: 4 } as const;

/** What to send to a streaming exec, and how long it may take. */
export interface StreamExecOptions {
  /** Written on the stdin channel once attached (v4 has no way to close stdin short of closing the socket). */
  stdin?: string | Buffer;
  /** The terminal size, sent on the resize channel before anything else (a tty exec's `stty size`). */
  resize?: { rows: number; cols: number };
  /** From the connect to the status: past this the socket is closed and the promise rejects. */
  deadlineMs: number;
}

/** What a streaming exec gave back. */
export interface StreamExecResult {
  stdout: string;
  /** Empty for a tty exec: the terminal merges stderr into stdout. */
  stderr: string;
  /**
   * The status channel's JSON, a Kubernetes Status: `{ status: 'Success' }`, or `status: 'Failure'` with
   * `reason: 'NonZeroExitCode'` and the code in `details.causes[0].message`.
   */
  status: unknown;
}

/**
 * Attaches to the URL a CRI `Exec` returned, the way `kubectl exec` does through the API server: the exec's
 * options (cmd, tty, stdin...) were fixed by the `Exec` request, so the URL needs no query. Resolves once the
 * runtime sent the status and closed the socket; rejects (and closes the socket) on an HTTP refusal, a socket
 * error, a close without status, or the deadline.
 */
export function streamExec(url: string, o: StreamExecOptions): Promise<StreamExecResult> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, [EXEC_PROTOCOL]);
    const out: Record<number, Buffer[]> = { [Channel.stdout]: [], [Channel.stderr]: [] };
    let status: unknown;
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };
    const fail = (why: string) =>
      settle(() => {
        ws.terminate();
        reject(new Error(`streamExec ${url}: ${why}`));
      });
    const timer = setTimeout(() => fail(`no status within ${o.deadlineMs} ms`), o.deadlineMs);
    const send = (channel: number, data: string | Buffer) =>
      ws.send(Buffer.concat([Buffer.from([channel]), Buffer.from(data)]));

    ws.on('unexpected-response', (_req, res) => fail(`HTTP ${res.statusCode} ${res.statusMessage}`));
    ws.on('error', (e) => fail(e.message));
    ws.on('open', () => {
      if (ws.protocol !== EXEC_PROTOCOL) return fail(`the server chose subprotocol '${ws.protocol}'`);
      if (o.resize) send(Channel.resize, JSON.stringify({ Width: o.resize.cols, Height: o.resize.rows }));
      if (o.stdin !== undefined) send(Channel.stdin, o.stdin);
    });
    ws.on('message', (data: RawData) => {
      const m = data as Buffer; // binaryType 'nodebuffer' (the default): one Buffer per message
      const body = m.subarray(1);
      if (m[0] === Channel.status) status = JSON.parse(body.toString());
      else out[m[0]!]?.push(body);
    });
    ws.on('close', (code, reason) => {
      if (status === undefined) return fail(`closed (${code} ${reason.toString()}) without a status`);
      const text = (channel: number) => Buffer.concat(out[channel]!).toString();
      settle(() => resolve({ stdout: text(Channel.stdout), stderr: text(Channel.stderr), status }));
    });
  });
}

/** The exit code a status channel's Status stands for: 0 for Success, the NonZeroExitCode cause's otherwise. */
export function exitCode(status: unknown): number | undefined {
  const s = status as {
    status?: string;
    reason?: string;
    details?: { causes?: { reason?: string; message?: string }[] };
  } | null;
  if (s?.status === 'Success') return 0;
  const cause = s?.details?.causes?.find((c) => c.reason === 'ExitCode');
  return s?.reason === 'NonZeroExitCode' && cause ? Number(cause.message) : undefined;
}
