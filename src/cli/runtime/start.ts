import { connectShim, type RuntimeContext, requireStatus } from './common.js';

/** `vmcache start ID`: starts the created container's process. */
export async function start(ctx: RuntimeContext, id: string): Promise<number> {
  requireStatus(ctx, id, 'start', ['created']);
  const c = await connectShim(ctx, id);
  try {
    await c.request({ t: 'start' });
  } finally {
    c.close();
  }
  return 0;
}
