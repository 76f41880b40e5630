import type { Duplex } from 'node:stream';
import { VmcError } from '../../errors.js';
import type { Clock } from '../../platform/clock.js';
import { systemClock } from '../../platform/clock.js';
import { PendingRequests } from '../pending.js';
import { StreamClient } from '../stream-client.js';
import { QmpDecoder, type QmpInbound } from './codec.js';

/** A QMP event as delivered to listeners. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

/** Options of a QMP client. */
export interface QmpClientOptions {
  clock?: Clock;
  /** Default per-command timeout. QMP answers in ~1 ms under TCG; migrations are polled, never awaited. */
  commandTimeoutMs?: number;
  /** Keeps the last N lines sent and received, for failure messages. */
  transcriptSize?: number;
}

/**
 * A QMP client on any duplex byte stream (a Unix socket in production, an in-memory pair in tests).
 *
 * Life cycle: `connect()` reads the greeting and negotiates capabilities; `execute()` sends id-correlated
 * commands; events are emitted as `'event'` (a QmpEvent). Once the stream closes every pending and later
 * command fails with VMC_ERR_QMP_CLOSED.
 *
 * QEMU serves one QMP client at a time: a second client is queued silently until this one closes, so owners
 * must `close()` before handing a VM to another process.
 */
export class QmpClient extends StreamClient {
  readonly #clock: Clock;
  readonly #timeoutMs: number;
  readonly #decoder = new QmpDecoder();
  /** Pending commands by id, each with the command's name (for error messages). */
  readonly #pending: PendingRequests<string, string>;
  readonly #transcript: string[] = [];
  readonly #transcriptSize: number;
  #nextId = 1;
  #greeting: ((g: QmpInbound) => void) | null = null;
  /** The QEMU version from the greeting, once connected. */
  version: unknown = undefined;

  constructor(stream: Duplex, opts: QmpClientOptions = {}) {
    super(stream, { code: 'VMC_ERR_QMP_CLOSED', protocol: 'QMP', peer: 'QEMU' });
    this.#clock = opts.clock ?? systemClock;
    this.#pending = new PendingRequests(this.#clock);
    this.#timeoutMs = opts.commandTimeoutMs ?? 10_000;
    this.#transcriptSize = opts.transcriptSize ?? 50;
    stream.on('data', (chunk: Buffer) => this.#onData(chunk));
  }

  /** Waits for the greeting and enters command mode. */
  async connect(timeoutMs = 5_000): Promise<void> {
    const greeting = await new Promise<QmpInbound>((resolve, reject) => {
      if (this.closedWith) return reject(this.closedWith);
      const cancel = this.#clock.setTimeout(
        () =>
          reject(
            new VmcError(
              'VMC_ERR_QMP_TIMEOUT',
              `no QMP greeting within ${timeoutMs} ms (another client may hold the monitor)`,
            ),
          ),
        timeoutMs,
      );
      this.#greeting = (g) => {
        cancel();
        resolve(g);
      };
      this.once('closed', (e: Error) => {
        cancel();
        reject(e);
      });
    });
    if (greeting.kind === 'greeting') this.version = greeting.version;
    await this.execute('qmp_capabilities');
  }

  /** Sends a command and resolves with its `return` value; rejects with VMC_ERR_QMP_COMMAND on a QMP error. */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = this.#timeoutMs,
  ): Promise<T> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = `c${this.#nextId++}`;
    const line = JSON.stringify(
      args === undefined ? { execute: command, id } : { execute: command, arguments: args, id },
    );
    const reply = this.#pending.add<T>(
      id,
      command,
      timeoutMs,
      () =>
        new VmcError('VMC_ERR_QMP_TIMEOUT', `QMP command ${command} got no answer within ${timeoutMs} ms`, {
          details: { transcript: this.transcript() },
        }),
    );
    this.#record(`> ${line}`);
    this.stream.write(`${line}\n`);
    return reply;
  }

  /**
   * Resolves with the first event named `name` for which `match` holds, or rejects after `timeoutMs`.
   * Register before triggering the action that causes the event.
   */
  waitEvent(
    name: string,
    match: (e: QmpEvent) => boolean = () => true,
    timeoutMs = 10_000,
  ): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent) => {
        if (e.event !== name || !match(e)) return;
        done();
        resolve(e);
      };
      const onClosed = (err: Error) => {
        done();
        reject(err);
      };
      const cancel = this.#clock.setTimeout(() => {
        done();
        reject(new VmcError('VMC_ERR_QMP_TIMEOUT', `no QMP event ${name} within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = () => {
        cancel();
        this.off('event', onEvent);
        this.off('closed', onClosed);
      };
      this.on('event', onEvent);
      this.once('closed', onClosed);
    });
  }

  /** The last lines exchanged, for error messages. */
  transcript(): string[] {
    return [...this.#transcript];
  }

  #record(line: string): void {
    this.#transcript.push(line.length > 300 ? `${line.slice(0, 300)}…` : line);
    if (this.#transcript.length > this.#transcriptSize) this.#transcript.shift();
  }

  #onData(chunk: Buffer): void {
    let messages: QmpInbound[];
    try {
      messages = this.#decoder.push(chunk);
    } catch (err) {
      this.fail(err as Error);
      this.stream.destroy();
      return;
    }
    for (const m of messages) this.#dispatch(m);
  }

  #dispatch(m: QmpInbound): void {
    if (m.kind === 'event') {
      this.#record(`< event ${m.event} ${JSON.stringify(m.data)}`);
      this.emit('event', { event: m.event, data: m.data, timestamp: m.timestamp } satisfies QmpEvent);
      return;
    }
    if (m.kind === 'greeting') {
      this.#record('< greeting');
      this.#greeting?.(m);
      this.#greeting = null;
      return;
    }
    this.#record(`< ${m.kind === 'return' ? JSON.stringify(m.value) : `error ${m.errorClass}: ${m.desc}`}`);
    const p = m.id === undefined ? undefined : this.#pending.take(m.id);
    if (!p) return; // an answer to a command that already timed out
    if (m.kind === 'return') p.resolve(m.value);
    else
      p.reject(
        new VmcError('VMC_ERR_QMP_COMMAND', `QMP ${p.meta} failed: ${m.errorClass}: ${m.desc}`, {
          details: { errorClass: m.errorClass },
        }),
      );
  }

  protected override onClosed(err: Error): void {
    this.#pending.failAll(err);
  }
}
