import { VmcError } from '../errors.js';
import { isContainerId } from '../protocol/guards.js';

/**
 * Checks of Task API request fields, at the edge: each failure is VMC_ERR_SHIM_BAD_REQUEST naming the message
 * and field (`CreateTaskRequest.bundle`), which the service answers InvalidArgument.
 */
export function bad(field: string, expected: string, got: unknown): never {
  const shown = typeof got === 'string' ? JSON.stringify(got.slice(0, 80)) : String(got);
  throw new VmcError('VMC_ERR_SHIM_BAD_REQUEST', `${field} must be ${expected}, got ${shown}`);
}

/** A task id: what containerd and vmcache's state store accept (letters, digits, `+-._`, at most 1024). */
export function taskId(field: string, v: string): string {
  if (!isContainerId(v)) bad(field, 'a task id (letters, digits and + - . _)', v);
  return v;
}

/** An exec id: empty (the container's own process) or an id. */
export function execId(field: string, v: string): string {
  return v === '' ? v : taskId(field, v);
}

/** An absolute path without NUL. */
export function absolutePath(field: string, v: string): string {
  if (!v.startsWith('/') || v.includes('\0')) bad(field, 'an absolute path', v);
  return v;
}

/** A stdio path: empty (no stream) or an absolute path. */
export function ioPath(field: string, v: string): string {
  return v === '' ? v : absolutePath(field, v);
}

/** A signal number as Kill carries it: 1..64. */
export function signalNumber(field: string, v: number): number {
  if (!Number.isInteger(v) || v < 1 || v > 64) bad(field, 'a signal number from 1 to 64', v);
  return v;
}
