import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const DRIVER = fileURLToPath(new URL('../../../test/helpers/pty-driver.py', import.meta.url));

/** A program on a pty the test holds (python's pty module drives it: Node cannot make one). */
export interface PtyProcess {
  /** Types `text` (as keys: the program's terminal echoes them). */
  send(text: string): void;
  /** Changes the terminal's size: the program's foreground group gets SIGWINCH. */
  resize(rows: number, cols: number): void;
  /** Waits until the output since the last match holds `re`; fails after `ms` with the output so far. */
  expect(re: RegExp, ms?: number): Promise<string>;
  /** Everything the terminal showed. */
  output(): string;
  /** The program's exit status (128 + signal when killed); killed after `deadlineMs`. */
  exited: Promise<number | null>;
}

/** Starts `argv` on a new pty of `rows` × `cols`. */
export function onPty(
  argv: string[],
  env: NodeJS.ProcessEnv,
  rows = 24,
  cols = 80,
  deadlineMs = 240_000,
): PtyProcess {
  const child = spawn('python3', [DRIVER, String(rows), String(cols), ...argv], {
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let from = 0;
  const waiters = new Set<() => void>();
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    for (const w of waiters) w();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stdin.on('error', () => {});
  const timer = setTimeout(() => child.kill('SIGKILL'), deadlineMs);
  const exited = new Promise<number | null>((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(timer);
      for (const w of waiters) w();
      resolve(code);
    }),
  );
  const line = (m: unknown) => child.stdin.write(`${JSON.stringify(m)}\n`);
  return {
    send: (text) => line({ send: Buffer.from(text).toString('base64') }),
    resize: (rows, cols) => line({ resize: [rows, cols] }),
    output: () => out,
    exited,
    expect: (re, ms = 60_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(out.slice(from));
          if (m) {
            from += m.index + m[0].length;
            done();
            resolve(m[0]);
          } else if (child.exitCode !== null) {
            done();
            reject(new Error(`exited before ${re}: ${JSON.stringify(out.slice(from))}`));
          }
        };
        const t = setTimeout(() => {
          done();
          reject(
            new Error(`no ${re} within ${ms} ms; the terminal showed ${JSON.stringify(out.slice(-2000))}`),
          );
        }, ms);
        const done = () => {
          clearTimeout(t);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      }),
  };
}
