import { join } from 'node:path';
import { buildImage } from '../guest/image/builder.js';
import type { CliContext } from './context.js';

/** `vmcache image build`: builds the guest image, or confirms it is up to date. */
export async function imageBuild(ctx: CliContext): Promise<number> {
  const t0 = ctx.clock.monotonic();
  const r = await buildImage(
    ctx.paths.imageDir,
    ctx.paths.cacheDir,
    {
      busybox: '/bin/busybox',
      node: process.execPath,
      agentBundle: join(ctx.bundleDir, 'agent.mjs'),
      assetsDir: join(ctx.bundleDir, 'guest-files'),
      nativeDir: join(ctx.bundleDir, 'native'),
    },
    { run: ctx.run, clock: ctx.clock, progress: (l) => ctx.say(`image: ${l}`) },
  );
  const secs = ((ctx.clock.monotonic() - t0) / 1000).toFixed(1);
  const what = r.rebuilt.kernel || r.rebuilt.rootfs ? 'built' : 'up to date';
  ctx.say(
    `image: ${what} in ${secs} s: ${r.imageDir} (kernel ${r.manifest.kernel.version}, node ${r.manifest.rootfs.nodeVersion})`,
  );
  return 0;
}
