import type { Duplex } from 'node:stream';
import { messageOf } from '../errors.js';
import { type Clock, waitAtMost } from '../platform/clock.js';
import type { Logger } from '../platform/logger.js';
import {
  TaskCreate,
  TaskDelete,
  TaskExecAdded,
  TaskExecStarted,
  TaskExit,
  TaskOOM,
  TaskPaused,
  TaskResumed,
  TaskStart,
} from '../protocol/shim/generated/containerd/events/task.js';
import { EventsDefinition } from '../protocol/shim/generated/containerd/services/ttrpc/events/v1/events.js';
import { TtrpcClient } from '../protocol/ttrpc/client.js';
import { timestampOf } from './timestamps.js';

/** The task events a shim publishes, by topic, with their message (as containerd's events package names them). */
export type TaskEvent =
  | { topic: '/tasks/create'; event: TaskCreate }
  | { topic: '/tasks/start'; event: TaskStart }
  | { topic: '/tasks/exit'; event: TaskExit }
  | { topic: '/tasks/delete'; event: TaskDelete }
  | { topic: '/tasks/exec-added'; event: TaskExecAdded }
  | { topic: '/tasks/exec-started'; event: TaskExecStarted }
  | { topic: '/tasks/paused'; event: TaskPaused }
  | { topic: '/tasks/resumed'; event: TaskResumed }
  | { topic: '/tasks/oom'; event: TaskOOM };

/** Where task events go; `publish` never blocks and never throws (delivery is the publisher's business). */
export interface EventSink {
  publish(e: TaskEvent): void;
}

/** The Any type (containerd's typeurl for gogo messages: the proto full name) and the bytes of each event. */
function encodeEvent(e: TaskEvent): { typeUrl: string; value: Buffer } {
  const enc = <T>(name: string, codec: { encode(m: T): { finish(): Uint8Array } }, m: T) => ({
    typeUrl: `containerd.events.${name}`,
    value: Buffer.from(codec.encode(m).finish()),
  });
  switch (e.topic) {
    case '/tasks/create':
      return enc('TaskCreate', TaskCreate, e.event);
    case '/tasks/start':
      return enc('TaskStart', TaskStart, e.event);
    case '/tasks/exit':
      return enc('TaskExit', TaskExit, e.event);
    case '/tasks/delete':
      return enc('TaskDelete', TaskDelete, e.event);
    case '/tasks/exec-added':
      return enc('TaskExecAdded', TaskExecAdded, e.event);
    case '/tasks/exec-started':
      return enc('TaskExecStarted', TaskExecStarted, e.event);
    case '/tasks/paused':
      return enc('TaskPaused', TaskPaused, e.event);
    case '/tasks/resumed':
      return enc('TaskResumed', TaskResumed, e.event);
    case '/tasks/oom':
      return enc('TaskOOM', TaskOOM, e.event);
  }
}

/** Options of {@link EventForwarder}. */
export interface EventForwarderOptions {
  /** Connects to containerd's ttrpc socket ($TTRPC_ADDRESS). */
  connect: () => Promise<Duplex>;
  namespace: string;
  clock: Clock;
  logger: Logger;
  /** Deadline of one Forward (ms); default 5000. */
  timeoutMs?: number;
  /** Events kept while containerd does not answer; past it the oldest is dropped, with an error logged. */
  maxQueued?: number;
  /** Attempts per event before it is dropped (a new connection each time); default 3. */
  attempts?: number;
}

/**
 * Forwards task events to containerd (`containerd.services.events.ttrpc.v1.Events/Forward`, metadata
 * `containerd-namespace-ttrpc`), in order, one at a time, on one connection made lazily and remade after a
 * failure. A task operation only enqueues: a containerd that is slow, restarting or gone never holds one up.
 * The queue is bounded, each call has a deadline and each event a number of attempts, so nothing grows or
 * waits without end; `drain` is bounded too.
 */
export class EventForwarder implements EventSink {
  readonly #o: Required<EventForwarderOptions>;
  readonly #queue: Array<{ e: TaskEvent; at: number }> = [];
  #client: TtrpcClient | null = null;
  #running: Promise<void> | null = null;

  constructor(opts: EventForwarderOptions) {
    this.#o = { timeoutMs: 5_000, maxQueued: 1024, attempts: 3, ...opts };
  }

  /** Events not yet delivered. */
  get pending(): number {
    return this.#queue.length;
  }

  publish(e: TaskEvent): void {
    if (this.#queue.length >= this.#o.maxQueued) {
      const lost = this.#queue.shift();
      this.#o.logger.error({ topic: lost?.e.topic }, 'event queue full: oldest event dropped');
    }
    this.#queue.push({ e, at: this.#o.clock.now() });
    this.#running ??= this.#run().finally(() => {
      this.#running = null;
    });
  }

  /** Resolves once the queue is empty, or after `ms` (what is left is logged). */
  async drain(ms: number): Promise<void> {
    const running = this.#running;
    if (!running) return;
    await waitAtMost(running, ms, this.#o.clock);
    if (this.#queue.length) this.#o.logger.warn({ left: this.#queue.length }, 'events not delivered');
  }

  /** Closes the connection (queued events stay queued). */
  close(): void {
    this.#client?.close();
    this.#client = null;
  }

  async #run(): Promise<void> {
    while (this.#queue.length) {
      const item = this.#queue[0]!;
      await this.#deliver(item);
      if (this.#queue[0] === item) this.#queue.shift();
    }
  }

  async #deliver({ e, at }: { e: TaskEvent; at: number }): Promise<void> {
    for (let attempt = 1; attempt <= this.#o.attempts; attempt++) {
      try {
        this.#client ??= new TtrpcClient(await this.#o.connect(), {
          clock: this.#o.clock,
          logger: this.#o.logger,
        });
        await this.#client.call(
          EventsDefinition,
          'forward',
          {
            envelope: {
              timestamp: timestampOf(at),
              namespace: this.#o.namespace,
              topic: e.topic,
              event: encodeEvent(e),
            },
          },
          { timeoutMs: this.#o.timeoutMs, metadata: [['containerd-namespace-ttrpc', this.#o.namespace]] },
        );
        return;
      } catch (err) {
        this.close();
        const last = attempt === this.#o.attempts;
        this.#o.logger[last ? 'error' : 'warn'](
          { topic: e.topic, attempt, err: messageOf(err) },
          last ? 'event dropped' : 'event forward failed',
        );
        // 100 ms, 200 ms, ...: long enough for containerd to reopen its socket on a restart, short enough
        // that an exit event still arrives while containerd waits for it.
        if (!last) await this.#o.clock.sleep(100 * attempt);
      }
    }
  }
}
