import { spawn } from 'node:child_process';
import { fstatSync, mkdirSync, readFileSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { socketAnswers } from '../../platform/unix-socket.js';
import { daemonArgs, type ShimFlags } from './flags.js';
import { configPathOfOptions } from './runtime-options.js';
import { SANDBOX_ID_ANNOTATION, socketAddress, socketPathOf } from './socket-address.js';

/** The group of a task: its pod's sandbox id (from config.json's CRI annotation), else its own id. */
export function groupOf(bundle: string, id: string): string {
  try {
    const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as {
      annotations?: Record<string, unknown>;
    };
    const sid = spec.annotations?.[SANDBOX_ID_ANNOTATION];
    return typeof sid === 'string' && sid !== '' ? sid : id;
  } catch {
    return id; // a bundle without a readable config.json: Create reports what is wrong with it
  }
}

/** Listens on `path`; null when a live daemon serves it already (the pod's), a stale socket is replaced. */
async function listenOrJoin(path: string): Promise<Server | null> {
  mkdirSync(join(path, '..'), { recursive: true, mode: 0o711 });
  for (let attempt = 0; ; attempt++) {
    const server = createServer();
    const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      server.once('error', resolve);
      server.listen(path, () => resolve(null));
    });
    if (!err) return server;
    if (err.code !== 'EADDRINUSE' || attempt > 0) throw err;
    if (await socketAnswers(path)) return null;
    unlinkSync(path);
  }
}

/** The runtime options on stdin (a protobuf Any), read to EOF; nothing when stdin is a terminal or absent. */
function readStdin(): Uint8Array {
  try {
    if (!fstatSync(0).isFIFO() && !fstatSync(0).isFile()) return new Uint8Array();
    return readFileSync(0);
  } catch {
    return new Uint8Array();
  }
}

/**
 * `start`: the shim socket at containerd's path for the task's group, the daemon started detached (own
 * process group, no stdio: containerd reads start's combined output to EOF) with the listening socket as fd 3,
 * `address` and `shim.pid` written in the bundle (the cwd), and only the address printed. A pod member whose
 * sandbox's daemon serves already gets that address. The runtime options' ConfigPath goes to the daemon.
 */
export async function startShim(f: ShimFlags, script: string): Promise<number> {
  const bundle = process.cwd();
  const address = socketAddress(f.address, f.namespace, groupOf(bundle, f.id));
  const path = socketPathOf(address);
  const config = configPathOfOptions(readStdin());
  const server = await listenOrJoin(path);
  if (server) {
    const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
    const child = spawn(process.execPath, [script, ...daemonArgs({ ...f, config, socket: path })], {
      cwd: bundle,
      detached: true,
      stdio: ['ignore', 'ignore', 'ignore', fd],
    });
    child.unref();
    writeFileSync(join(bundle, 'shim.pid'), String(child.pid));
  }
  writeFileSync(join(bundle, 'address'), address);
  writeSync(1, address);
  return 0;
}
