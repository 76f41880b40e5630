/**
 * The google.rpc codes a ttrpc Response carries, and the one error type that stands for a non-OK status on both
 * sides: a handler throws {@link statusError} to choose its code (NotFound for a task that is gone), and the
 * client rejects with the same VMC_ERR_TTRPC_STATUS error, the code in `details.rpcCode`.
 */
import { isVmcError, VmcError } from '../../errors.js';

/** google.rpc.Code (grpc-go `codes`, which ttrpc uses). */
export const RpcCode = {
  OK: 0,
  Canceled: 1,
  Unknown: 2,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
  Unauthenticated: 16,
} as const;
/** A google.rpc code. */
export type RpcCode = (typeof RpcCode)[keyof typeof RpcCode];

const NAMES = new Map<number, string>(Object.entries(RpcCode).map(([k, v]) => [v, k]));

/** `NotFound` for 5; `code 42` for a code google.rpc does not define. */
export function rpcCodeName(code: number): string {
  return NAMES.get(code) ?? `code ${code}`;
}

/** A status as it goes on the wire. */
export interface RpcStatus {
  readonly code: number;
  readonly message: string;
}

/** The error for a non-OK status: thrown by handlers, raised by the client. */
export function statusError(code: number, message: string, opts: { cause?: unknown } = {}): VmcError {
  return new VmcError('VMC_ERR_TTRPC_STATUS', `${rpcCodeName(code)}: ${message}`, {
    cause: opts.cause,
    details: { rpcCode: code, rpcMessage: message },
  });
}

/** The status a {@link statusError} stands for, or undefined for any other value. */
export function statusOfError(err: unknown): RpcStatus | undefined {
  if (!isVmcError(err, 'VMC_ERR_TTRPC_STATUS')) return undefined;
  const code = err.details.rpcCode;
  const message = err.details.rpcMessage;
  if (typeof code !== 'number' || typeof message !== 'string') return undefined;
  return { code, message };
}

/** The google.rpc code of `err` when it is a {@link statusError}. */
export function rpcCodeOf(err: unknown): number | undefined {
  return statusOfError(err)?.code;
}
