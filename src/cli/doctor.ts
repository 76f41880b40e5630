import { accessSync, constants, mkdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { isStaticElf } from '../guest/image/elf.js';
import { IMAGE_FILES, outputsPresent, readManifest } from '../guest/image/manifest.js';
import { detectAccel } from '../hypervisor/qemu/accel.js';
import type { CliContext } from './context.js';

type Verdict = 'ok' | 'warn' | 'fail';

/** `vmcache doctor`: checks and explains the host prerequisites. Exits 1 when something required is missing. */
export async function doctor(ctx: CliContext): Promise<number> {
  const rows: Array<[Verdict, string, string]> = [];
  const check = async (name: string, fn: () => Promise<[Verdict, string]> | [Verdict, string]) => {
    try {
      const [v, detail] = await fn();
      rows.push([v, name, detail]);
    } catch (e) {
      rows.push(['fail', name, e instanceof Error ? e.message.split('\n')[0]! : String(e)]);
    }
  };
  await check('node', () => {
    const [maj, min] = process.versions.node.split('.').map(Number) as [number, number];
    return maj > 20 || (maj === 20 && min >= 19)
      ? ['ok', process.version]
      : ['fail', `${process.version}; need >= 20.19`];
  });
  await check('qemu', async () => {
    const { stdout } = await ctx.run('qemu-system-x86_64', ['--version']);
    return ['ok', stdout.toString().split('\n')[0]!];
  });
  await check('accelerator', () => {
    const a = detectAccel();
    return [
      a.accel === 'kvm' ? 'ok' : 'warn',
      `${a.accel}: ${a.reason}${a.accel === 'tcg' ? ' (cold boots take seconds; the cache hides that)' : ''}`,
    ];
  });
  await check('busybox', () =>
    isStaticElf('/bin/busybox')
      ? ['ok', '/bin/busybox is static']
      : ['fail', '/bin/busybox is not static: install busybox-static'],
  );
  for (const tool of ['apt-get', 'dpkg-deb', 'depmod', 'mkfs.ext4', 'gcc', 'xz', 'ldd']) {
    await check(`tool ${tool}`, async () => {
      await ctx.run('sh', ['-c', `command -v ${tool}`]);
      return ['ok', 'found (needed by image build)'];
    });
  }
  await check('configuration', () => {
    if (ctx.configError) return ['fail', ctx.configError.message];
    if (!ctx.configFile) return ['ok', 'none (built-in defaults)'];
    const n = ctx.config.warnings.length;
    return [
      n ? 'warn' : 'ok',
      `${ctx.configFile}${n ? `: ${n} warning${n > 1 ? 's' : ''} (logged above)` : ''}`,
    ];
  });
  await check('configured guest', () => {
    // The paths the VMs boot with: the configured ones when they are a vmcache image, else the built image.
    const { kernel, initrd, rootDisk } = ctx.config.vm;
    const missing = [kernel, initrd, rootDisk].filter((p) => !outputsPresent(dirname(p), [basename(p)]));
    if (missing.length) return ['fail', `missing: ${missing.join(', ')}: run 'vmcache image build'`];
    const own = [kernel, initrd, rootDisk].every((p) => dirname(p) === ctx.paths.imageDir);
    return ['ok', own ? `the built image (${ctx.paths.imageDir})` : `${kernel}, ${initrd}, ${rootDisk}`];
  });
  await check('guest image', () => {
    const m = readManifest(ctx.paths.imageDir);
    if (!m || !outputsPresent(ctx.paths.imageDir, Object.values(IMAGE_FILES))) {
      return ['fail', `not built in ${ctx.paths.imageDir}: run 'vmcache image build'`];
    }
    return [
      'ok',
      `${ctx.paths.imageDir} (kernel ${m.kernel.version}, node ${m.rootfs.nodeVersion}, built ${m.builtAt})`,
    ];
  });
  await check('state directory', () => {
    mkdirSync(join(ctx.paths.runDir, 'vm'), { recursive: true, mode: 0o700 });
    accessSync(ctx.paths.runDir, constants.W_OK);
    return ['ok', `${ctx.paths.runDir} is writable`];
  });
  await check('privileges', () =>
    process.getuid?.() === 0
      ? ['ok', 'root (bind mounts for container roots work)']
      : ['warn', 'not root: container bundles cannot be bind-mounted into VMs'],
  );
  for (const [v, name, detail] of rows) process.stdout.write(`${v.padEnd(4)}  ${name}: ${detail}\n`);
  return rows.some((r) => r[0] === 'fail') ? 1 : 0;
}
