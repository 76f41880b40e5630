import { type ErrorCode, isVmcError, messageOf } from '../errors.js';
import { RpcCode, type RpcStatus, statusOfError } from '../protocol/ttrpc/status.js';

/** The google.rpc code of each VmcError code a Task handler may throw (containerd's errdefs read them). */
const CODES: Partial<Record<ErrorCode, number>> = {
  VMC_ERR_SHIM_TASK_NOT_FOUND: RpcCode.NotFound,
  VMC_ERR_CONTAINER_NOT_FOUND: RpcCode.NotFound,
  VMC_ERR_SHIM_BAD_REQUEST: RpcCode.InvalidArgument,
  VMC_ERR_OCI_INVALID: RpcCode.InvalidArgument,
  VMC_ERR_OCI_BUNDLE: RpcCode.InvalidArgument,
  VMC_ERR_SHIM_UNSUPPORTED: RpcCode.Unimplemented,
  VMC_ERR_OCI_UNSUPPORTED: RpcCode.Unimplemented,
  VMC_ERR_INVALID_STATE: RpcCode.FailedPrecondition,
  VMC_ERR_CONTAINER_EXISTS: RpcCode.AlreadyExists,
  VMC_ERR_CACHE_TIMEOUT: RpcCode.Unavailable,
  VMC_ERR_CACHE_MISS: RpcCode.Unavailable,
};

/**
 * The status a Task handler's error is answered with: the only place where vmcache's typed errors become
 * ttrpc statuses. The message keeps the VmcError code (`... (VMC_ERR_SHIM_ROOTFS)`) so that containerd's log
 * and `ctr` show it; anything unexpected is Internal.
 */
export function taskStatusOf(err: unknown): RpcStatus {
  const given = statusOfError(err);
  if (given) return given;
  if (isVmcError(err))
    return { code: CODES[err.code] ?? RpcCode.Internal, message: `${err.message} (${err.code})` };
  return { code: RpcCode.Internal, message: messageOf(err) };
}
