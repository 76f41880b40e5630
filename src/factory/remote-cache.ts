import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { messageOf, VmcError } from '../errors.js';
import type { VmSpec } from '../hypervisor/types.js';
import {
  CacheServiceClient,
  type GrpcStatus,
  type GrpcVM,
  type GrpcVMConfig,
} from '../protocol/cache/generated/cache.js';
import { decodeHandoff } from '../vm/handoff.js';
import { Vm, type VmDeps } from '../vm/vm.js';
import type { FactoryBase } from './base.js';

/** Metadata key by which a client asks for a lease (and promises to call AckVM). */
export const LEASE_METADATA = 'vmcache-lease';

type Unary<Req, Res> = (
  req: Req,
  md: Metadata,
  opts: { deadline: number },
  cb: (e: ServiceError | null, r?: Res) => void,
) => unknown;

function call<Req, Res>(
  fn: Unary<Req, Res>,
  self: CacheServiceClient,
  req: Req,
  md: Metadata,
  timeoutMs: number,
  what: string,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    fn.call(self, req, md, { deadline: Date.now() + timeoutMs }, (e, r) => {
      if (!e) return resolve(r!);
      // UNAVAILABLE (14) means no server; everything else is the server's own answer.
      const code =
        e.code === 14
          ? 'VMC_ERR_CACHE_UNAVAILABLE'
          : e.code === 4
            ? 'VMC_ERR_CACHE_TIMEOUT'
            : 'VMC_ERR_CACHE_PROTOCOL';
      reject(
        new VmcError(code, `cache ${what}: ${e.details || e.message}`, {
          cause: e,
          details: { grpcCode: e.code },
        }),
      );
    });
  });
}

/**
 * The client side of a VM cache server (Kata's `grpccache`). Each `getBaseVM` takes a VM from the server's
 * pool, adopts it (connects to its QMP and agent sockets and records itself as owner), then acknowledges it,
 * ending the server's lease. If this process dies before the acknowledgement, the lease expires and the server
 * stops the VM: nothing leaks.
 */
export class RemoteCacheFactory implements FactoryBase {
  readonly #client: CacheServiceClient;
  readonly #spec: VmSpec;
  readonly #deps: VmDeps;
  readonly #rpcTimeoutMs: number;

  private constructor(client: CacheServiceClient, spec: VmSpec, deps: VmDeps, rpcTimeoutMs: number) {
    this.#client = client;
    this.#spec = spec;
    this.#deps = deps;
    this.#rpcTimeoutMs = rpcTimeoutMs;
  }

  /** Connects and fetches the server's configuration (as Kata's client does). */
  static async connect(
    endpoint: string,
    deps: VmDeps,
    opts: { rpcTimeoutMs?: number } = {},
  ): Promise<RemoteCacheFactory> {
    const client = new CacheServiceClient(`unix://${endpoint}`, credentials.createInsecure());
    const timeout = opts.rpcTimeoutMs ?? 60_000;
    try {
      const cfg = await call<object, GrpcVMConfig>(
        client.config as Unary<object, GrpcVMConfig>,
        client,
        {},
        new Metadata(),
        5_000,
        'Config',
      );
      let spec: VmSpec;
      try {
        spec = JSON.parse(Buffer.from(cfg.Data).toString('utf8')) as VmSpec;
      } catch (cause) {
        throw new VmcError('VMC_ERR_CACHE_PROTOCOL', `cache Config: Data is not JSON (${messageOf(cause)})`, {
          cause,
        });
      }
      return new RemoteCacheFactory(client, spec, deps, timeout);
    } catch (err) {
      client.close();
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
    return this.#spec;
  }

  async getBaseVM(): Promise<Vm> {
    const md = new Metadata();
    md.set(LEASE_METADATA, '1');
    const g = await call<object, GrpcVM>(
      this.#client.getBaseVm as Unary<object, GrpcVM>,
      this.#client,
      {},
      md,
      this.#rpcTimeoutMs,
      'GetBaseVM',
    );
    const record = decodeHandoff(g.hypervisor);
    if (record.id !== g.id)
      throw new VmcError(
        'VMC_ERR_CACHE_PROTOCOL',
        `cache GetBaseVM: id ${g.id} does not match its record (${record.id})`,
      );
    const vm = await Vm.attachRecord(record, this.#deps, { takeOwnership: true });
    try {
      await call(
        this.#client.ackVm as Unary<object, object>,
        this.#client,
        { id: g.id, leaseId: g.leaseId },
        new Metadata(),
        5_000,
        'AckVM',
      );
    } catch (err) {
      // The server may already have given up on us (lease expired and the VM stopped): do not use this VM.
      await vm.destroy().catch(() => undefined);
      throw err;
    }
    return vm;
  }

  /** The server's status. */
  serverStatus(): Promise<GrpcStatus> {
    return call(
      this.#client.status as Unary<object, GrpcStatus>,
      this.#client,
      {},
      new Metadata(),
      5_000,
      'Status',
    );
  }

  /** Asks the server to quit. */
  quit(): Promise<void> {
    return call(
      this.#client.quit as Unary<object, object>,
      this.#client,
      {},
      new Metadata(),
      5_000,
      'Quit',
    ).then(() => undefined);
  }

  async close(): Promise<void> {
    this.#client.close();
  }
}
