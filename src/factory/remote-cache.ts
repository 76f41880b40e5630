import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import type { MissPolicy } from '../config/schema.js';
import { messageOf, VmcError } from '../errors.js';
import type { VmSpec } from '../hypervisor/types.js';
import type { PhaseRecorder } from '../platform/phases.js';
import {
  CacheServiceClient,
  type GrpcStatus,
  type GrpcVM,
  type GrpcVMConfig,
} from '../protocol/cache/generated/cache.js';
import type { VmRecord } from '../vm/record.js';
import { Vm, type VmDeps } from '../vm/vm.js';
import type { BaseVmRequest, FactoryBase } from './base.js';
import {
  decodeConfig,
  decodeVm,
  formatShape,
  fromGrpcError,
  LEASE_METADATA,
  MISS_POLICY_METADATA,
  SHAPE_METADATA,
  UNREADY_METADATA,
} from './cache-wire.js';

/** Re-exported for the tests, the bench and the reliability suite, which import it from here. */
export { LEASE_METADATA };

/** Deadline of the short RPCs (Config, AckVM, Status, Quit): the server answers them without waiting on a VM. */
const SHORT_RPC_MS = 5_000;

/**
 * VMs taken in a row whose agent did not answer after resume before giving up: one bad VM is an accident (a
 * guest that crashed on resume), several in a row mean the pool's VMs are all bad, and more would drain it.
 */
const HANDOUT_ATTEMPTS = 3;

/** Options of a client. */
export interface RemoteCacheOptions {
  /** Deadline of GetBaseVM (it waits for a boot on a miss under `wait`). */
  rpcTimeoutMs?: number;
  /** The miss policy every GetBaseVM asks for unless the call chooses; absent, the server's default applies. */
  missPolicy?: MissPolicy;
  /**
   * How long the agent of a VM just taken has to answer after resume (the hand-out health gate). A parked
   * agent answers in milliseconds; a VM that misses this is stopped and another is taken.
   */
  readyTimeoutMs?: number;
  /** How a taken VM is adopted (tests replace it: the gate is about what happens after). */
  attach?: Attach;
}

/** Adopts a VM taken from the server (its phases lapped in `trace`, if given). */
type Attach = (record: VmRecord, deps: VmDeps, trace?: PhaseRecorder) => Promise<Vm>;

/** A generated unary method, as called here (the generated overloads do not narrow to this by themselves). */
type Unary<Req, Res> = (
  req: Req,
  md: Metadata,
  opts: { deadline: number },
  cb: (e: ServiceError | null, r?: Res) => void,
) => unknown;

/** What a client needs to make calls: the channel and the clock its deadlines are measured on. */
interface Channel {
  client: CacheServiceClient;
  deps: VmDeps;
}

/** A connected client: its channel, and what the server's Config said. */
interface Connection extends Channel {
  spec: VmSpec;
  rpcTimeoutMs: number;
  missPolicy: MissPolicy | undefined;
  readyTimeoutMs: number;
  attach: Attach;
}

/** One unary call, deadline `timeoutMs` from now on the injected clock; a failure becomes the wire's VmcError. */
function call<Req, Res>(
  ch: Channel,
  what: string,
  fn: (c: CacheServiceClient) => Unary<Req, Res>,
  req: Req,
  opts: { timeoutMs?: number; md?: Metadata } = {},
): Promise<Res> {
  const deadline = ch.deps.clock.now() + (opts.timeoutMs ?? SHORT_RPC_MS);
  return new Promise((resolve, reject) => {
    fn(ch.client).call(ch.client, req, opts.md ?? new Metadata(), { deadline }, (e, r) =>
      e ? reject(fromGrpcError(e, what)) : resolve(r!),
    );
  });
}

/**
 * The client side of a VM cache server (Kata's `grpccache`). Each `getBaseVM` takes a VM from the server's
 * pool, adopts it (connects to its QMP and agent sockets and records itself as owner), then acknowledges it,
 * ending the server's lease. If this process dies before the acknowledgement, the lease expires and the server
 * stops the VM: nothing leaks.
 *
 * Health at hand-out: then it resumes the VM and waits for its agent's handshake (bounded), and pauses it again.
 * A VM whose agent does not answer is stopped and another one taken, its id sent along (`vmcache-unready`) so
 * that the server counts it; the miss policy applies to that request as to any. Why here and not in the
 * server: the agent of a paused VM cannot answer, so a server-side check would have to resume, ping and park
 * every VM it hands out, and a park costs ~0.3 s (the guest must see its host leave; QEMU reports it at most
 * once a second), a hundred times a hit's cost. Here the handshake is the one the composer would do on its
 * resume anyway, moved ahead; what the gate adds is one QMP `stop` now and the composer's `cont` later, well
 * under a millisecond. On the bad path it costs `readyTimeoutMs` and one more GetBaseVM.
 */
export class RemoteCacheFactory implements FactoryBase {
  readonly #c: Connection;

  private constructor(c: Connection) {
    this.#c = c;
  }

  /** Connects and fetches the server's configuration (as Kata's client does). */
  static async connect(
    endpoint: string,
    deps: VmDeps,
    opts: RemoteCacheOptions = {},
  ): Promise<RemoteCacheFactory> {
    const ch: Channel = {
      client: new CacheServiceClient(`unix://${endpoint}`, credentials.createInsecure()),
      deps,
    };
    try {
      const cfg = await call<object, GrpcVMConfig>(
        ch,
        'Config',
        (c) => c.config as Unary<object, GrpcVMConfig>,
        {},
      );
      return new RemoteCacheFactory({
        ...ch,
        spec: decodeConfig(cfg),
        rpcTimeoutMs: opts.rpcTimeoutMs ?? 60_000,
        missPolicy: opts.missPolicy,
        readyTimeoutMs: opts.readyTimeoutMs ?? 5_000,
        attach:
          opts.attach ?? ((record, d, trace) => Vm.attachRecord(record, d, { takeOwnership: true, trace })),
      });
    } catch (err) {
      ch.client.close();
      if (err instanceof VmcError && err.code === 'VMC_ERR_CACHE_UNAVAILABLE') {
        throw new VmcError(
          'VMC_ERR_CACHE_UNAVAILABLE',
          `no VM cache server answers on ${endpoint} (start one with 'vmcache factory init')`,
          { cause: err },
        );
      }
      throw err;
    }
  }

  config(): VmSpec {
    return this.#c.spec;
  }

  /**
   * A paused VM from the server's pools whose agent has answered; on a miss, `missPolicy` (else the client's,
   * else the server's default) decides. `want.shape` is sent (`vmcache-shape`) when it differs from the
   * server's default pool, whose shape a request without it gets (Kata's clients). `_signal` is not used: the
   * RPC has its deadline. `want.trace` gets the laps `cache: GetBaseVM RPC`, `attach: ...`, `cache: AckVM RPC`
   * and `gate: ...` (again for each VM taken).
   */
  async getBaseVM(_signal?: AbortSignal, want: BaseVmRequest = {}): Promise<Vm> {
    const missPolicy = want.missPolicy ?? this.#c.missPolicy;
    const trace = want.trace;
    const d = this.#c.spec;
    const shape =
      want.shape && (want.shape.cpus !== d.cpus || want.shape.memoryMiB !== d.memoryMiB)
        ? formatShape(want.shape)
        : null;
    let unready: string | null = null;
    for (let attempt = 1; ; attempt++) {
      const vm = await this.#take(missPolicy, unready, shape, trace);
      try {
        await this.#ready(vm, trace);
        return vm;
      } catch (err) {
        await vm.destroy().catch(() => undefined);
        this.#c.deps.logger.warn(
          { vmId: vm.id, attempt, err: messageOf(err).split('\n')[0] },
          'VM from the cache did not answer after resume; stopped it',
        );
        if (attempt >= HANDOUT_ATTEMPTS)
          throw new VmcError(
            'VMC_ERR_AGENT_TIMEOUT',
            `${attempt} VMs in a row from the cache had an agent that did not answer after resume; last: ${messageOf(err)}`,
            { cause: err },
          );
        unready = vm.id;
      }
    }
  }

  /** One GetBaseVM, adopted and acknowledged: the VM is this process's from here on. */
  async #take(
    missPolicy: MissPolicy | undefined,
    unready: string | null,
    shape: string | null,
    trace: PhaseRecorder | undefined,
  ): Promise<Vm> {
    const md = new Metadata();
    md.set(LEASE_METADATA, '1');
    if (shape) md.set(SHAPE_METADATA, shape);
    if (missPolicy) md.set(MISS_POLICY_METADATA, missPolicy);
    if (unready) md.set(UNREADY_METADATA, unready);
    const g = await call<object, GrpcVM>(
      this.#c,
      'GetBaseVM',
      (c) => c.getBaseVm as Unary<object, GrpcVM>,
      {},
      { timeoutMs: this.#c.rpcTimeoutMs, md },
    );
    trace?.lap('cache: GetBaseVM RPC');
    const { record, leaseId } = decodeVm(g);
    const vm = await this.#c.attach(record, this.#c.deps, trace);
    try {
      await call(this.#c, 'AckVM', (c) => c.ackVm as Unary<object, object>, { id: record.id, leaseId });
      trace?.lap('cache: AckVM RPC');
    } catch (err) {
      // The server may already have given up on us (lease expired and the VM stopped): do not use this VM.
      await vm.destroy().catch(() => undefined);
      throw err;
    }
    return vm;
  }

  /** The hand-out gate: the agent answers within `readyTimeoutMs` of resume; the VM is paused again after. */
  async #ready(vm: Vm, trace: PhaseRecorder | undefined): Promise<void> {
    const ms = this.#c.readyTimeoutMs;
    const resumed = vm.resume(trace, 'gate');
    resumed.catch(() => undefined); // when the deadline wins, the caller stops the VM and this rejects
    let cancel = () => {};
    const deadline = new Promise<never>((_, reject) => {
      cancel = this.#c.deps.clock.setTimeout(
        () =>
          reject(
            new VmcError(
              'VMC_ERR_AGENT_TIMEOUT',
              `VM ${vm.id}: the agent did not answer within ${ms} ms of resume`,
            ),
          ),
        ms,
      );
    });
    try {
      await Promise.race([resumed, deadline]);
    } finally {
      cancel();
    }
    await vm.pause();
    trace?.lap('gate: QMP stop');
  }

  /** The server's status. */
  serverStatus(): Promise<GrpcStatus> {
    return call(this.#c, 'Status', (c) => c.status as Unary<object, GrpcStatus>, {});
  }

  /** Asks the server to quit. */
  async quit(): Promise<void> {
    await call(this.#c, 'Quit', (c) => c.quit as Unary<object, object>, {});
  }

  async close(): Promise<void> {
    this.#c.client.close();
  }
}
