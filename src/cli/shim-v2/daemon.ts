import { rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { messageOf } from '../../errors.js';
import { connectUnixSocket } from '../../platform/unix-socket.js';
import { TaskDefinition } from '../../protocol/shim/generated/containerd/runtime/task/v2/shim.js';
import { TtrpcServer } from '../../protocol/ttrpc/server.js';
import { StateStore } from '../../sandbox/state-store.js';
import { EventForwarder } from '../../shim/events.js';
import { openTaskIo } from '../../shim/task-io.js';
import { TaskService } from '../../shim/task-service.js';
import { taskStatusOf } from '../../shim/task-status.js';
import { VmBackend } from '../../shim/vm-backend.js';
import { hostVmSpec } from '../common.js';
import { makeContext } from '../context.js';
import { writePhases } from '../phases-file.js';
import { fifoLogger } from './fifo-log.js';
import type { ShimFlags } from './flags.js';
import { socketPathOf } from './socket-address.js';

/** How long the daemon gives its last events (exit, delete) to reach containerd before it exits (ms). */
const DRAIN_MS = 2_000;

/** Where the daemons of namespace `ns` keep their containers' records (the sandbox layer's state store). */
export function shimStateRoot(runDir: string, ns: string): string {
  return join(runDir, 'shim', ns);
}

/**
 * The daemon: one per pod, started by `start` with the listening shim socket as fd 3 and the bundle as cwd.
 * It logs to the bundle's `log` FIFO, serves the Task service over ttrpc, forwards task events to
 * $TTRPC_ADDRESS, and exits when Shutdown finds no task left (the sandbox's stop has taken the VM by then).
 * Configuration: `-config` (the runtime options' ConfigPath), else VMCACHE_CONFIG, else
 * /etc/vmcache/configuration.toml, as `makeContext` resolves them.
 */
export async function runDaemon(f: ShimFlags): Promise<void> {
  const logger = fifoLogger(join(process.cwd(), 'log'), f.debug).child({ shim: f.id, ns: f.namespace });
  process.on('unhandledRejection', (e) => logger.error({ err: messageOf(e) }, 'unhandled rejection'));
  const ctx = { ...makeContext(f.config ? { config: f.config } : {}, { stderr: false }), logger };
  for (const w of ctx.config.warnings) logger.warn({}, w);
  const store = new StateStore(shimStateRoot(ctx.paths.runDir, f.namespace), ctx.clock);
  const ttrpcAddress = process.env.TTRPC_ADDRESS ?? `${f.address}.ttrpc`;
  const events = new EventForwarder({
    connect: () => connectUnixSocket(socketPathOf(ttrpcAddress)),
    namespace: f.namespace,
    clock: ctx.clock,
    logger,
  });
  const server = new TtrpcServer({ logger, clock: ctx.clock, statusOf: taskStatusOf });
  let exiting = false;
  const service = new TaskService({
    backend: new VmBackend(
      { ...ctx, store },
      () => hostVmSpec(ctx),
      ctx.phasesFile ? (report) => writePhases(ctx, 'shim-v2 create+start', report) : undefined,
    ),
    openIo: openTaskIo,
    events,
    clock: ctx.clock,
    logger,
    pid: process.pid,
    onShutdown: () => {
      if (exiting) return;
      exiting = true;
      void (async () => {
        await events.drain(DRAIN_MS);
        events.close();
        await server.close();
        if (f.socket) rmSync(f.socket, { force: true });
        logger.info({}, 'shutdown: no task left, exiting');
        process.exit(0);
      })();
    },
  });
  server.register(TaskDefinition, service.handlers());
  const listener = createServer();
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen({ fd: 3 }, () => resolve());
  });
  server.attach(listener);
  // performance.now() counts from the process's start: the daemon's own start-up, Node's included.
  const startUp = performance.now();
  logger.info({ ms: Math.round(startUp), config: ctx.configFile }, 'daemon serving');
  if (ctx.phasesFile)
    writePhases(ctx, 'shim-v2 daemon', {
      totalMs: startUp,
      phases: [{ name: 'daemon start-up (Node, bundle load, config, listening)', ms: startUp }],
      figures: [],
    });
}
