/**
 * The command line containerd 1.6 gives a runtime v2 shim (runtime/v2/binary.go, shim/shim.go), parsed as Go's
 * `flag` package does: `-name value`, `--name value`, `-name=value`, booleans bare. The sub-command (`start`,
 * `delete`) is the first argument that is not a flag; none means the daemon. Imports nothing: `start` must
 * stay cheap.
 */

/** The flags of every invocation, plus the daemon's own (set only by `start`). */
export interface ShimFlags {
  namespace: string;
  /** containerd's main socket (its `-address`), which the shim socket's name is derived from. */
  address: string;
  publishBinary: string;
  id: string;
  bundle: string;
  debug: boolean;
  /** Daemon only: the configuration file (runtime options' ConfigPath, passed on by `start`). */
  config: string;
  /** Daemon only: the socket it serves on fd 3 (to remove it on exit). */
  socket: string;
  /** `start`, `delete`, or '' for the daemon. */
  action: string;
}

const STRING_FLAGS: Record<string, keyof ShimFlags> = {
  namespace: 'namespace',
  address: 'address',
  'publish-binary': 'publishBinary',
  id: 'id',
  bundle: 'bundle',
  config: 'config',
  socket: 'socket',
};

/** Parses `argv` (without node and the script); throws an Error naming a flag that is unknown or lacks a value. */
export function parseShimFlags(argv: readonly string[]): ShimFlags {
  const f: ShimFlags = {
    namespace: '',
    address: '',
    publishBinary: '',
    id: '',
    bundle: '',
    debug: false,
    config: '',
    socket: '',
    action: '',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('-')) {
      if (!f.action) f.action = a;
      continue;
    }
    const body = a.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    if (name === 'debug') {
      f.debug = eq < 0 || body.slice(eq + 1) !== 'false';
      continue;
    }
    const key = STRING_FLAGS[name];
    if (!key) throw new Error(`flag provided but not defined: -${name}`);
    const value = eq >= 0 ? body.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new Error(`flag needs an argument: -${name}`);
    (f as unknown as Record<string, string>)[key] = value;
  }
  return f;
}

/** The flags the daemon is started with (containerd's own, and the daemon's), in Go flag syntax. */
export function daemonArgs(f: ShimFlags): string[] {
  const a = ['-namespace', f.namespace, '-id', f.id, '-address', f.address];
  if (f.publishBinary) a.push('-publish-binary', f.publishBinary);
  if (f.debug) a.push('-debug');
  if (f.config) a.push('-config', f.config);
  if (f.socket) a.push('-socket', f.socket);
  return a;
}
