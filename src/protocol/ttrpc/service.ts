/**
 * Services as the server registers them and the client calls them: ts-proto's generic definitions
 * (`outputServices=generic-definitions`, e.g. `TaskDefinition`) are used as they are, so the method names and
 * message codecs come from the generated code and never drift from the .proto files.
 */

/** The codec half of a ts-proto message the server and client need. */
export interface MessageCodec<T> {
  encode(message: T): { finish(): Uint8Array };
  decode(input: Uint8Array): T;
}

/** One unary method of a generic definition. */
export interface MethodDefinition<Req = unknown, Res = unknown> {
  /** The ttrpc method name, e.g. `Connect`. */
  readonly name: string;
  readonly requestType: MessageCodec<Req>;
  readonly responseType: MessageCodec<Res>;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
}

/** A generic service definition: `fullName` is the ttrpc service name, e.g. `containerd.task.v2.Task`. */
export interface ServiceDefinition {
  readonly fullName: string;
  // biome-ignore lint/suspicious/noExplicitAny: ts-proto definitions are typed per method; any lets each fit
  readonly methods: Readonly<Record<string, MethodDefinition<any, any>>>;
}

/** The request type of a method definition. */
export type RequestOf<M> = M extends MethodDefinition<infer Req, unknown> ? Req : never;
/** The response type of a method definition. */
export type ResponseOf<M> = M extends { responseType: MessageCodec<infer Res> } ? Res : never;

/** What a handler knows about its call. */
export interface CallContext {
  readonly service: string;
  readonly method: string;
  /** Aborted at the request's deadline (`timeout_nano`) or when the connection closes. */
  readonly signal: AbortSignal;
  /** The request's deadline on the server's monotonic clock (ms); undefined when it has none. */
  readonly deadline: number | undefined;
  /** Request metadata, each key with its values in order (ttrpc allows repeated keys). */
  readonly metadata: ReadonlyMap<string, readonly string[]>;
}

/** A unary handler on decoded messages. */
export type UnaryHandler<Req, Res> = (request: Req, ctx: CallContext) => Promise<Res>;

/** Handlers for some or all methods of a definition, keyed as ts-proto keys them (`connect`, `state`, ...). */
export type ServiceImplementation<D extends ServiceDefinition> = {
  [K in keyof D['methods']]?: UnaryHandler<RequestOf<D['methods'][K]>, ResponseOf<D['methods'][K]>>;
};

/** A registered method: its codecs and its handler, on bytes. */
export interface RegisteredMethod {
  readonly definition: MethodDefinition;
  readonly handler: UnaryHandler<unknown, unknown>;
}

/** Looks a method up: the service is unknown, the method is unknown, or here it is. */
export type MethodLookup = (
  service: string,
  method: string,
) => { found: 'no-service' } | { found: 'no-method' } | { found: 'method'; method: RegisteredMethod };
