import { connectShim, type RuntimeContext, requireStatus, signalName } from './common.js';

/** `vmcache kill ID [SIGNAL]` (default SIGTERM; names or numbers). */
export async function kill(ctx: RuntimeContext, id: string, signal: string | undefined): Promise<number> {
  const sig = signalName(signal ?? 'SIGTERM');
  requireStatus(ctx, id, 'kill', ['created', 'running', 'paused']);
  await request(ctx, id, { t: 'kill', signal: sig });
  return 0;
}

/** `vmcache pause ID`: freezes the container's VM. */
export async function pause(ctx: RuntimeContext, id: string): Promise<number> {
  requireStatus(ctx, id, 'pause', ['running']);
  await request(ctx, id, { t: 'pause' });
  return 0;
}

/** `vmcache resume ID`. */
export async function resume(ctx: RuntimeContext, id: string): Promise<number> {
  requireStatus(ctx, id, 'resume', ['paused']);
  await request(ctx, id, { t: 'resume' });
  return 0;
}

async function request(
  ctx: RuntimeContext,
  id: string,
  req: { t: 'kill'; signal: string } | { t: 'pause' } | { t: 'resume' },
): Promise<void> {
  const c = await connectShim(ctx, id);
  try {
    await c.request(req);
  } finally {
    c.close();
  }
}
