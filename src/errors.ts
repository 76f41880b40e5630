/**
 * Typed errors with stable codes. Codes never change meaning once released; `docs/errors.md` lists them and
 * `test/unit/errors.test.ts` pins this table against that document.
 */

/** Every error code vmcache can raise, with a one-line meaning. */
export const ErrorCodes = {
  VMC_ERR_CONFIG_INVALID: 'a configuration value is missing or invalid',
  VMC_ERR_IMAGE_MISSING: 'the guest image (kernel, initramfs or root disk) is not built',
  VMC_ERR_IMAGE_BUILD: 'building the guest image failed',
  VMC_ERR_HOST_PREREQ: 'a host prerequisite (QEMU, busybox, permissions) is missing',
  VMC_ERR_QEMU_EXITED: 'QEMU exited before the VM was ready',
  VMC_ERR_QEMU_START_TIMEOUT: 'QEMU did not open its QMP socket in time',
  VMC_ERR_QMP_PROTOCOL: 'QMP peer sent something that is not QMP',
  VMC_ERR_QMP_COMMAND: 'QEMU answered a QMP command with an error',
  VMC_ERR_QMP_TIMEOUT: 'a QMP command got no answer in time',
  VMC_ERR_QMP_CLOSED: 'the QMP connection closed',
  VMC_ERR_AGENT_TIMEOUT: 'the guest agent did not answer in time',
  VMC_ERR_AGENT_CLOSED: 'the agent connection closed',
  VMC_ERR_AGENT_PROTOCOL: 'the agent peer broke the framing or the handshake',
  VMC_ERR_AGENT_REQUEST: 'the guest agent refused or failed a request',
  VMC_ERR_VM_NOT_FOUND: 'no VM with that id is recorded',
  VMC_ERR_VM_DEAD: 'the VM process is no longer running',
  VMC_ERR_VM_INTERRUPTED: 'the operation was interrupted (signal or abort) and undone',
  VMC_ERR_CACHE_TIMEOUT: 'the VM cache had no ready VM within the acquire timeout',
  VMC_ERR_CACHE_CLOSED: 'the VM cache is closed',
  VMC_ERR_CACHE_UNAVAILABLE: 'the VM cache server cannot be reached',
  VMC_ERR_CACHE_PROTOCOL: 'the cache server or client sent something invalid',
  VMC_ERR_CACHE_ENDPOINT_IN_USE: 'another cache server is serving that endpoint',
  VMC_ERR_CACHE_LEASE: 'the VM lease is unknown or expired',
  VMC_ERR_TEMPLATE_FAILED: 'creating, loading or cloning the VM template failed',
  VMC_ERR_TEMPLATE_MISSING: 'VM templating is enabled but no template exists',
  VMC_ERR_TEMPLATE_DAMAGED: 'the VM template is incomplete or was made with another configuration',
  VMC_ERR_OCI_BUNDLE: 'the OCI bundle directory, config.json or rootfs is missing',
  VMC_ERR_OCI_INVALID: 'the OCI config.json holds an invalid or unsupported value',
  VMC_ERR_INVALID_STATE: 'the operation is not allowed in the current state',
  VMC_ERR_CLI_USAGE: 'the command line is not valid',
  VMC_ERR_OCI_UNSUPPORTED: 'the OCI config.json asks for something vmcache cannot do in a VM',
  VMC_ERR_OCI_HOOK: 'an OCI hook (prestart, createRuntime, createContainer, startContainer) failed',
  VMC_ERR_CONTAINER_NOT_FOUND: 'no container with that id exists under the state root',
  VMC_ERR_CONTAINER_EXISTS: 'a container with that id already exists',
  VMC_ERR_CONTAINER_START: "the container's process could not be started in the VM",
  VMC_ERR_CONTAINER_UNREACHABLE: "the container's host-side process does not answer",
  VMC_ERR_CONTAINER_LOCKED: "another invocation holds the container's lock",
  VMC_ERR_NETWORK_SETUP: "connecting the pod's network namespace to the VM failed",
  VMC_ERR_AGENT_PROCESS_LOST:
    "a guest process's exit can no longer be known (the agent lost it or is silent)",
  VMC_ERR_CACHE_ENDPOINT_UNUSABLE:
    'a socket cannot be created at an endpoint path (another file is there, or its parent is not a directory)',
  VMC_ERR_AGENT_FRAME_TOO_LARGE: 'a message is too large for one agent frame',
  VMC_ERR_CONTROL_PROTOCOL:
    "a peer on a container's control socket sent a frame or request that is not valid",
  VMC_ERR_VM_RECORD_INVALID: 'a VM record on disk (or in a hand-off) is not valid',
  VMC_ERR_LOCK_TIMEOUT: 'another process held a lock for longer than the wait allows',
  VMC_ERR_CONSOLE_SOCKET: 'the terminal could not be handed to --console-socket',
  VMC_ERR_CACHE_MISS: 'the VM cache had no ready VM and the request asked not to wait (miss policy fail)',
  VMC_ERR_TTRPC_PROTOCOL: 'a ttrpc peer sent a frame or message that is not valid ttrpc',
  VMC_ERR_TTRPC_FRAME_TOO_LARGE: 'a ttrpc message is larger than one frame may carry (4 MiB)',
  VMC_ERR_TTRPC_CLOSED: 'the ttrpc connection closed',
  VMC_ERR_TTRPC_TIMEOUT: 'a ttrpc call got no answer before its deadline',
  VMC_ERR_TTRPC_STATUS: 'a ttrpc call failed with a status (a google.rpc code and message)',
  VMC_ERR_SHIM_TASK_NOT_FOUND: 'the shim has no task (or exec) with that id',
  VMC_ERR_SHIM_BAD_REQUEST: 'a Task API request to the shim has a missing or invalid field',
  VMC_ERR_SHIM_UNSUPPORTED: 'the shim does not implement what the Task API request asks for (yet)',
  VMC_ERR_SHIM_ROOTFS: "mounting or unmounting a task's rootfs (the mounts containerd hands over) failed",
  VMC_ERR_SHIM_IO: "a task's stdio FIFOs could not be opened",
} as const;

/** A stable error code. */
export type ErrorCode = keyof typeof ErrorCodes;

/** Base of every error vmcache raises on purpose. `code` is stable; `message` is for people. */
export class VmcError extends Error {
  readonly code: ErrorCode;
  /** Extra structured context (paths, VM id, stderr tail) for logs and test failure messages. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'VmcError';
    this.code = code;
    this.details = Object.freeze({ ...(opts.details ?? {}) });
  }
}

/** True when `err` is a VmcError, optionally of the given code. */
export function isVmcError(err: unknown, code?: ErrorCode): err is VmcError {
  return err instanceof VmcError && (code === undefined || err.code === code);
}

/** Message of any thrown value, for wrapping. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
