import { chmodSync, lstatSync, mkdirSync, type Stats, statSync, unlinkSync } from 'node:fs';
import { connect, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { VmcError } from '../errors.js';

/**
 * Longest Unix socket path: `sun_path` is 108 bytes on Linux, including the terminating NUL. libuv silently
 * truncates a longer path and binds a different file, so longer paths are refused before listening.
 */
export const MAX_UNIX_SOCKET_PATH_BYTES = 107;

/** What `path` lacks to name a Unix socket (`"an absolute path"`, ...), or null when it can. */
export function unixSocketPathProblem(path: string): string | null {
  if (!path.startsWith('/')) return 'an absolute path';
  if (path.includes('\0')) return 'a path without NUL characters';
  const bytes = Buffer.byteLength(path);
  if (bytes > MAX_UNIX_SOCKET_PATH_BYTES)
    return `a path of at most ${MAX_UNIX_SOCKET_PATH_BYTES} bytes (a Unix socket path; this one has ${bytes})`;
  if (path.endsWith('/')) return 'a file path, not a directory';
  return null;
}

/**
 * Connects to the Unix socket at `path`: the connected socket (with no listener of ours left on it), or the
 * connection error (ENOENT, ECONNREFUSED, ...) with the half-open socket destroyed.
 */
export function connectUnixSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    const onError = (e: Error) => {
      s.destroy();
      reject(e);
    };
    s.once('error', onError);
    s.once('connect', () => {
      s.off('error', onError);
      resolve(s);
    });
  });
}

/** The connected socket at `path`, or null when nobody accepts connections there (for polling). */
export function tryConnectUnixSocket(path: string): Promise<Socket | null> {
  return connectUnixSocket(path).catch(() => null);
}

/** Resolves true when something accepts connections on the socket at `path`. */
export async function socketAnswers(path: string): Promise<boolean> {
  const s = await tryConnectUnixSocket(path);
  s?.destroy();
  return s !== null;
}

/** Options of {@link listenUnixSocket}. */
interface UnixListenOptions {
  /** What configured the path, for messages, e.g. `[cache] metrics_endpoint`. */
  key: string;
  /** Message of the VMC_ERR_CACHE_ENDPOINT_IN_USE error when a live server answers on the path. */
  inUse: string;
  /** Mode of the socket (default 0600: only the owner may connect). */
  mode?: number;
  /** Called before a stale socket (nobody answers on it) is replaced. */
  onStale?: (path: string) => void;
}

/** A socket {@link listenUnixSocket} created. */
export interface UnixSocketFile {
  readonly path: string;
  /** Removes the socket file if it is still the one created here (never another file). Idempotent. */
  remove(): void;
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

/** lstat, or null when nothing is there; other failures (EACCES) are thrown. */
function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch (e) {
    if (errno(e) === 'ENOENT') return null;
    throw e;
  }
}

/** The nearest existing ancestor of `path` that is not a directory, if any (why mkdir -p would fail). */
function nonDirectoryAncestor(path: string): string | null {
  for (let p = path; ; p = dirname(p)) {
    try {
      return statSync(p).isDirectory() ? null : p;
    } catch (e) {
      if (errno(e) !== 'ENOENT' && errno(e) !== 'ENOTDIR') return null;
    }
    if (p === dirname(p)) return null;
  }
}

/**
 * Makes `server` listen on the Unix socket `path` with `mode` (0600) whatever the umask, creating the parent
 * directory (0755) if needed. Only a stale socket is ever replaced: a live one is VMC_ERR_CACHE_ENDPOINT_IN_USE,
 * and any other file, a parent that is not a directory, or a failed bind is VMC_ERR_CACHE_ENDPOINT_UNUSABLE,
 * naming `key` and the path. On failure nothing is left listening.
 */
export async function listenUnixSocket(
  server: Server,
  path: string,
  opts: UnixListenOptions,
): Promise<UnixSocketFile> {
  const mode = opts.mode ?? 0o600;
  const at = `${opts.key} ${JSON.stringify(path)}`;
  const unusable = (why: string, cause?: unknown) =>
    new VmcError('VMC_ERR_CACHE_ENDPOINT_UNUSABLE', `${at}: ${why}`, {
      cause,
      details: { key: opts.key, path },
    });
  const problem = unixSocketPathProblem(path);
  if (problem) throw new VmcError('VMC_ERR_CONFIG_INVALID', `${at} must be ${problem}`);

  const parent = dirname(path);
  const bad = nonDirectoryAncestor(parent);
  if (bad) throw unusable(`${bad === parent ? 'its parent' : 'an ancestor'} ${bad} is not a directory`);
  try {
    mkdirSync(parent, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw unusable(`cannot create its directory ${parent}: ${(e as Error).message}`, e);
  }

  let existing: Stats | null;
  try {
    existing = lstatOrNull(path);
  } catch (e) {
    throw unusable(`cannot inspect it: ${(e as Error).message}`, e);
  }
  if (existing) {
    if (!existing.isSocket()) {
      const kind = existing.isDirectory()
        ? 'a directory'
        : existing.isSymbolicLink()
          ? 'a symbolic link'
          : 'a file';
      throw unusable(
        `exists and is ${kind}, not a socket; refusing to replace it (remove it or pick another path)`,
      );
    }
    if (await socketAnswers(path)) throw new VmcError('VMC_ERR_CACHE_ENDPOINT_IN_USE', opts.inUse);
    opts.onStale?.(path);
    try {
      unlinkSync(path);
    } catch (e) {
      if (errno(e) !== 'ENOENT') throw unusable(`cannot remove the stale socket: ${(e as Error).message}`, e);
    }
  }

  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error) => {
      server.off('listening', onListening);
      reject(unusable(`cannot listen: ${e.message}`, e));
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    // The bind happens synchronously inside listen(): a umask this strict for that call only means the socket
    // never exists with looser permissions, and nothing else in the process runs under it.
    const oldMask = process.umask(0o177);
    try {
      server.listen(path);
    } finally {
      process.umask(oldMask);
    }
  });

  let created: Stats | null = null;
  const file: UnixSocketFile = {
    path,
    remove() {
      try {
        const now = created && lstatSync(path);
        if (now?.isSocket() && now.ino === created!.ino && now.dev === created!.dev) unlinkSync(path);
      } catch {
        // gone already (closing a listening socket unlinks it), or not ours to remove
      }
      created = null;
    },
  };
  try {
    created = lstatSync(path);
    if (!created.isSocket()) throw new Error('the bound path is not a socket');
    // Explicitly, whatever the umask was: the mode is the access control of the socket.
    chmodSync(path, mode);
  } catch (e) {
    await new Promise<void>((r) => server.close(() => r()));
    file.remove();
    throw unusable(`cannot set up the socket: ${(e as Error).message}`, e);
  }
  return file;
}
