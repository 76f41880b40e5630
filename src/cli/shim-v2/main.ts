/**
 * containerd-shim-vmcache-v2: the containerd runtime v2 shim (`runtime_type = "io.containerd.vmcache.v2"`).
 * containerd runs `start` (prints the socket address, exits) and `delete` (cleanup after a dead daemon); with
 * no sub-command this is the daemon `start` spawned. Only the flag parser is loaded up front; each action's
 * code (the daemon's: the sandbox layer, the factory client, ttrpc) is imported when that action runs.
 */
import { parseShimFlags } from './flags.js';

async function main(): Promise<number> {
  const f = parseShimFlags(process.argv.slice(2));
  if (!f.namespace && f.action !== '') throw new Error('-namespace is required');
  if (!f.id) throw new Error('-id is required');
  switch (f.action) {
    case 'start':
      return (await import('./start.js')).startShim(f, process.argv[1]!);
    case 'delete':
      return (await import('./delete.js')).deleteShim(f);
    case '':
      await (await import('./daemon.js')).runDaemon(f);
      return -1; // serving: the process exits at Shutdown
    default:
      throw new Error(`unknown action ${JSON.stringify(f.action)} (start, delete)`);
  }
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`containerd-shim-vmcache-v2: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
