import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { VmcError } from '../errors.js';
import type { VmSpec } from '../hypervisor/types.js';
import {
  CacheServiceClient,
  type GrpcStatus,
  type GrpcVM,
  type GrpcVMConfig,
} from '../protocol/cache/generated/cache.js';
import { Vm, type VmDeps } from '../vm/vm.js';
import type { FactoryBase } from './base.js';
import { decodeConfig, decodeVm, fromGrpcError, LEASE_METADATA } from './cache-wire.js';

/** Re-exported for the tests, the bench and the reliability suite, which import it from here. */
export { LEASE_METADATA };

/** Deadline of the short RPCs (Config, AckVM, Status, Quit): the server answers them without waiting on a VM. */
const SHORT_RPC_MS = 5_000;

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
    opts: { rpcTimeoutMs?: number } = {},
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

  async getBaseVM(): Promise<Vm> {
    const md = new Metadata();
    md.set(LEASE_METADATA, '1');
    const g = await call<object, GrpcVM>(
      this.#c,
      'GetBaseVM',
      (c) => c.getBaseVm as Unary<object, GrpcVM>,
      {},
      { timeoutMs: this.#c.rpcTimeoutMs, md },
    );
    const { record, leaseId } = decodeVm(g);
    const vm = await Vm.attachRecord(record, this.#c.deps, { takeOwnership: true });
    try {
      await call(this.#c, 'AckVM', (c) => c.ackVm as Unary<object, object>, { id: record.id, leaseId });
    } catch (err) {
      // The server may already have given up on us (lease expired and the VM stopped): do not use this VM.
      await vm.destroy().catch(() => undefined);
      throw err;
    }
    return vm;
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
