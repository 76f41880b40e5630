import { renameSync, rmSync, writeFileSync } from 'node:fs';

/**
 * The temporary file beside `file` that is renamed over it. Beside it, so the rename stays within one file
 * system (and is atomic); named for this process, so two writers never share one.
 */
function tempPathFor(file: string): string {
  return `${file}.${process.pid}.tmp`;
}

/**
 * Replaces `file` with `data` atomically (write a temporary file, then rename): a reader, or a crash, sees the
 * old content or the new, never half of it. `mode` applies to a newly written file (default 0666 & ~umask).
 */
export function writeFileAtomic(file: string, data: string | Uint8Array, opts: { mode?: number } = {}): void {
  const tmp = tempPathFor(file);
  try {
    writeFileSync(tmp, data, opts.mode === undefined ? {} : { mode: opts.mode });
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

/**
 * Replaces `file` with what `make` writes to the path it is given (a tool's output file, e.g. mkfs), atomically
 * as {@link writeFileAtomic} does; nothing is left behind when `make` fails. `make` gets a path where nothing is
 * (a tool that writes into an existing file, as mkfs does, would keep its old size).
 */
export async function produceFileAtomic(
  file: string,
  make: (tmp: string) => Promise<unknown>,
): Promise<void> {
  const tmp = tempPathFor(file);
  rmSync(tmp, { force: true });
  try {
    await make(tmp);
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}
