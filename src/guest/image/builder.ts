import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { messageOf, VmcError } from '../../errors.js';
import { produceFileAtomic, writeFileAtomic } from '../../platform/atomic-write.js';
import type { Clock } from '../../platform/clock.js';
import type { CommandRunner } from '../../platform/command.js';
import { type CpioEntry, writeCpio } from './cpio.js';
import { isStaticElf } from './elf.js';
import { extractVmlinux, fetchKernelDeb, kernelVersion, resolveKernelPackage } from './kernel.js';
import {
  BUILDER_VERSION,
  hashFile,
  hashValue,
  IMAGE_FILES,
  type ImageManifest,
  outputsPresent,
  readManifest,
  writeManifest,
} from './manifest.js';
import { GUEST_MODULES, parseBuiltin, parseModulesDep, resolveLoadOrder } from './modules.js';

/** Where the builder takes its inputs from. */
interface ImageSources {
  /** A statically linked busybox (Debian `busybox-static`). */
  busybox: string;
  /** The Node binary copied into the guest root (the host's own by default). */
  node: string;
  /** The bundled agent (`dist/bundle/agent.mjs`). */
  agentBundle: string;
  /** Directory holding `init`, `stage2` and `vmc-helper.c`. */
  assetsDir: string;
  /** Directory holding the host helpers' sources (`vmc-console.c`). */
  nativeDir: string;
}

/** Dependencies of the builder. */
interface ImageBuilderDeps {
  run: CommandRunner;
  clock: Clock;
  /** Receives one line per step, for progress output. */
  progress: (line: string) => void;
}

/** Outcome of a build. */
interface ImageBuildResult {
  imageDir: string;
  rebuilt: { kernel: boolean; rootfs: boolean };
  manifest: ImageManifest;
}

/**
 * Builds (or confirms) the guest image in `imageDir`: `vmlinux`, `initrd.img`, `rootfs.img`, `manifest.json`.
 * Two stages, each rebuilt only when the hash of its inputs changes or an output is missing, so a second run
 * is a no-op. Outputs are written under temporary names and renamed, so an interrupted build leaves the
 * previous image intact.
 */
export async function buildImage(
  imageDir: string,
  cacheDir: string,
  src: ImageSources,
  deps: ImageBuilderDeps,
): Promise<ImageBuildResult> {
  const { run, progress } = deps;
  for (const [what, p] of Object.entries(src)) {
    if (!existsSync(p)) throw new VmcError('VMC_ERR_IMAGE_BUILD', `image input ${what} not found: ${p}`);
  }
  if (!isStaticElf(src.busybox)) {
    throw new VmcError(
      'VMC_ERR_HOST_PREREQ',
      `${src.busybox} is not a statically linked busybox; install the busybox-static package`,
    );
  }
  mkdirSync(imageDir, { recursive: true });
  const previous = readManifest(imageDir);
  const asset = (n: string) => join(src.assetsDir, n);

  // Stage 1: kernel + initramfs.
  progress('resolving the guest kernel package');
  const pkg = await resolveKernelPackage(run);
  const kernelInputs = hashValue({
    v: BUILDER_VERSION,
    pkg,
    busybox: hashFile(src.busybox),
    init: hashFile(asset('init')),
    modules: GUEST_MODULES,
  });
  let kernel: ImageManifest['kernel'];
  const kernelFresh =
    previous?.kernel.inputsHash === kernelInputs &&
    outputsPresent(imageDir, [IMAGE_FILES.kernel, IMAGE_FILES.initrd]);
  if (kernelFresh) {
    kernel = previous!.kernel;
    progress(`kernel ${kernel.version}: up to date`);
  } else {
    progress(`downloading ${pkg}`);
    const deb = await fetchKernelDeb(run, pkg, cacheDir);
    kernel = await buildKernelStage(imageDir, cacheDir, deb, pkg, src, deps);
    kernel.inputsHash = kernelInputs;
  }

  // Stage 2: root disk.
  const nodeVersion = (await run(src.node, ['--version'])).stdout.toString().trim();
  const libs = await sharedLibraries(run, src.node);
  const rootInputs = hashValue({
    v: BUILDER_VERSION,
    busybox: hashFile(src.busybox),
    node: `${nodeVersion}:${statSync(src.node).size}:${hashFile(src.node)}`,
    libs: libs.map((l) => `${l}:${statSync(l).size}`),
    agent: hashFile(src.agentBundle),
    stage2: hashFile(asset('stage2')),
    helper: hashFile(asset('vmc-helper.c')),
  });
  let rootfs: ImageManifest['rootfs'];
  const rootFresh =
    previous?.rootfs.inputsHash === rootInputs && outputsPresent(imageDir, [IMAGE_FILES.rootfs]);
  if (rootFresh) {
    rootfs = previous!.rootfs;
    progress('root disk: up to date');
  } else {
    rootfs = { inputsHash: rootInputs, nodeVersion, sizeBytes: await buildRootfs(imageDir, src, libs, deps) };
  }

  // Stage 3: the host's pty helper for --console-socket (runs on the host, beside the image it serves).
  const consoleSource = join(src.nativeDir, 'vmc-console.c');
  const consoleInputs = hashValue({ v: BUILDER_VERSION, source: hashFile(consoleSource) });
  const consoleFresh =
    previous?.console?.inputsHash === consoleInputs && outputsPresent(imageDir, [IMAGE_FILES.console]);
  if (consoleFresh) progress('console helper: up to date');
  else {
    progress('compiling vmc-console (the host helper for --console-socket)');
    const out = join(imageDir, IMAGE_FILES.console);
    await produceFileAtomic(out, (tmp) =>
      run('gcc', ['-O2', '-s', '-o', tmp, consoleSource], { errorCode: 'VMC_ERR_IMAGE_BUILD' }),
    );
  }

  const fresh = kernelFresh && rootFresh && consoleFresh;
  const manifest: ImageManifest = fresh
    ? previous!
    : {
        builderVersion: BUILDER_VERSION,
        builtAt: new Date(deps.clock.now()).toISOString(),
        kernel,
        rootfs,
        console: { inputsHash: consoleInputs },
      };
  if (!fresh) writeManifest(imageDir, manifest);
  return { imageDir, rebuilt: { kernel: !kernelFresh, rootfs: !rootFresh }, manifest };
}

async function buildKernelStage(
  imageDir: string,
  cacheDir: string,
  deb: string,
  pkg: string,
  src: ImageSources,
  deps: ImageBuilderDeps,
): Promise<ImageManifest['kernel']> {
  const { run, progress } = deps;
  const tmp = mkdtempSync(join(cacheDir, 'unpack-'));
  try {
    progress(`unpacking ${deb.slice(deb.lastIndexOf('/') + 1)}`);
    await run('dpkg-deb', ['-x', deb, tmp], { errorCode: 'VMC_ERR_IMAGE_BUILD' });
    const version = kernelVersion(tmp);
    const bz = join(tmp, 'boot', `vmlinuz-${version}`);
    progress('extracting the uncompressed kernel (PVH boot)');
    await extractVmlinux(run, bz, join(imageDir, IMAGE_FILES.kernel));
    const modDir = join(tmp, 'lib', 'modules', version);
    if (!existsSync(join(modDir, 'modules.dep'))) {
      // The package ships no modules.dep (dpkg's postinst runs depmod); generate it in the unpacked tree.
      await run('depmod', ['-b', tmp, version], { errorCode: 'VMC_ERR_IMAGE_BUILD' });
    }
    const table = parseModulesDep(readFileSync(join(modDir, 'modules.dep'), 'utf8'));
    const builtin = existsSync(join(modDir, 'modules.builtin'))
      ? parseBuiltin(readFileSync(join(modDir, 'modules.builtin'), 'utf8'))
      : new Set<string>();
    let order: Array<{ name: string; path: string }>;
    try {
      order = resolveLoadOrder(table, GUEST_MODULES, builtin);
    } catch (e) {
      throw new VmcError('VMC_ERR_IMAGE_BUILD', `kernel ${version}: ${messageOf(e)}`, { cause: e });
    }
    progress(`writing the initramfs (${order.length} modules)`);
    const entries: CpioEntry[] = [
      ...['bin', 'dev', 'etc', 'lib', 'lib/modules', 'proc', 'sys', 'sysroot'].map((path) => ({
        kind: 'dir' as const,
        path,
      })),
      { kind: 'chardev', path: 'dev/console', major: 5, minor: 1 },
      { kind: 'file', path: 'bin/busybox', data: readFileSync(src.busybox), mode: 0o755 },
      { kind: 'file', path: 'init', data: readFileSync(join(src.assetsDir, 'init')), mode: 0o755 },
      { kind: 'file', path: 'etc/modules', data: Buffer.from(`${order.map((m) => m.name).join('\n')}\n`) },
      ...order.map((m) => ({
        kind: 'file' as const,
        path: `lib/modules/${m.name}.ko`,
        data: readFileSync(join(modDir, m.path)),
      })),
    ];
    const out = join(imageDir, IMAGE_FILES.initrd);
    // Uncompressed: under TCG gzip made no measurable difference to boot time (research §0) and costs build time.
    writeFileAtomic(out, writeCpio(entries));
    return { inputsHash: '', package: pkg, version, modules: order.map((m) => m.name) };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** The shared libraries (and loader) a dynamically linked binary needs, from `ldd`. */
export async function sharedLibraries(run: CommandRunner, binary: string): Promise<string[]> {
  const { stdout } = await run('ldd', [binary]);
  const libs: string[] = [];
  for (const line of stdout.toString().split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]!);
  }
  return libs;
}

/** Maps a host library path into the merged-/usr layout of the guest root (`/lib/x` → `usr/lib/x`). */
function guestLibPath(p: string): string {
  return p.startsWith('/usr/') ? p.slice(1) : `usr${p}`;
}

async function buildRootfs(
  imageDir: string,
  src: ImageSources,
  libs: string[],
  deps: ImageBuilderDeps,
): Promise<number> {
  const { run, progress } = deps;
  const stage = mkdtempSync(join(imageDir, '.rootfs-'));
  try {
    progress('staging the guest root (busybox, node, agent)');
    for (const d of [
      'bin',
      'sbin',
      'usr/bin',
      'usr/sbin',
      'usr/lib',
      'usr/lib64',
      'etc',
      'proc',
      'sys',
      'dev',
      'tmp',
      'run',
      'root',
      'mnt',
      'var',
      'opt/vmcache',
    ]) {
      mkdirSync(join(stage, d), { recursive: true });
    }
    chmodSync(join(stage, 'tmp'), 0o1777);
    symlinkSync('usr/lib', join(stage, 'lib'));
    symlinkSync('usr/lib64', join(stage, 'lib64'));
    symlinkSync('/tmp', join(stage, 'var/tmp'));
    copyFileSync(src.busybox, join(stage, 'bin/busybox'));
    chmodSync(join(stage, 'bin/busybox'), 0o755);
    const applets = (await run(src.busybox, ['--list-full'])).stdout.toString().split('\n').filter(Boolean);
    for (const a of applets) {
      if (a === 'bin/busybox' || existsSync(join(stage, a))) continue;
      symlinkSync('/bin/busybox', join(stage, a));
    }
    copyFileSync(src.node, join(stage, 'usr/bin/node'));
    chmodSync(join(stage, 'usr/bin/node'), 0o755);
    for (const lib of libs) {
      const dst = join(stage, guestLibPath(lib));
      mkdirSync(dirname(dst), { recursive: true });
      copyFileSync(lib, dst); // follows symlinks: the guest gets the real bytes under the name the loader asks for
    }
    copyFileSync(src.agentBundle, join(stage, 'opt/vmcache/agent.mjs'));
    copyFileSync(join(src.assetsDir, 'stage2'), join(stage, 'opt/vmcache/init'));
    chmodSync(join(stage, 'opt/vmcache/init'), 0o755);
    progress('compiling vmc-helper (static)');
    await run(
      'gcc',
      [
        '-static',
        '-Os',
        '-s',
        '-o',
        join(stage, 'opt/vmcache/vmc-helper'),
        join(src.assetsDir, 'vmc-helper.c'),
      ],
      {
        errorCode: 'VMC_ERR_IMAGE_BUILD',
      },
    );
    writeFileSync(
      join(stage, 'etc/passwd'),
      'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
    );
    writeFileSync(join(stage, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
    writeFileSync(join(stage, 'etc/hosts'), '127.0.0.1 localhost vmcache\n::1 localhost\n');
    writeFileSync(join(stage, 'etc/hostname'), 'vmcache\n');

    const bytes = treeSize(stage);
    // Room for ext4 metadata (inode tables, directories): 15 % plus 32 MiB, rounded to MiB.
    const sizeMiB = Math.ceil((bytes * 1.15) / 2 ** 20) + 32;
    progress(`writing the root disk (${sizeMiB} MiB ext4)`);
    const out = join(imageDir, IMAGE_FILES.rootfs);
    // No journal: the disk is attached read-only, and a journal-less ext4 mounts without replay checks.
    await produceFileAtomic(out, (tmp) =>
      run(
        'mkfs.ext4',
        [
          '-q',
          '-F',
          '-L',
          'vmcroot',
          '-O',
          '^has_journal',
          '-E',
          'root_owner=0:0',
          '-d',
          stage,
          tmp,
          `${sizeMiB}M`,
        ],
        { errorCode: 'VMC_ERR_IMAGE_BUILD' },
      ),
    );
    return statSync(out).size;
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

function treeSize(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    const st = lstatSync(p);
    if (st.isDirectory()) total += treeSize(p);
    else if (st.isFile()) total += st.size;
    else if (st.isSymbolicLink()) total += readlinkSync(p).length;
  }
  return total;
}
