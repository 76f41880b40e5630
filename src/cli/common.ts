import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { VmcError } from '../errors.js';
import { IMAGE_FILES, outputsPresent, readManifest } from '../guest/image/manifest.js';
import type { VmSpec } from '../hypervisor/types.js';
import type { CliContext } from './context.js';

/**
 * The VM spec from the configuration, after checking that its kernel, initramfs and root disk exist. When they
 * are the built image's (the default), the image must also be complete (its manifest present).
 */
export function hostVmSpec(ctx: CliContext): VmSpec {
  const dir = ctx.paths.imageDir;
  const spec = ctx.config.vm;
  const usesBuiltImage = spec.kernel === join(dir, IMAGE_FILES.kernel);
  if (
    usesBuiltImage &&
    (!readManifest(dir) || !outputsPresent(dir, [IMAGE_FILES.kernel, IMAGE_FILES.initrd, IMAGE_FILES.rootfs]))
  ) {
    throw new VmcError(
      'VMC_ERR_IMAGE_MISSING',
      `no guest image in ${dir} (missing or incomplete ${join(dir, IMAGE_FILES.manifest)}); run 'vmcache image build'`,
    );
  }
  for (const [key, f] of [
    ['kernel', spec.kernel],
    ['initrd', spec.initrd],
    ['image', spec.rootDisk],
  ] as const) {
    if (!existsSync(f))
      throw new VmcError('VMC_ERR_IMAGE_MISSING', `[hypervisor.qemu] ${key}: ${f} does not exist`);
  }
  return { ...spec, kernelParams: [...spec.kernelParams] };
}

/** Parses a positive integer option, naming the option on error. */
export function positiveInt(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n <= 0)
      // Commander reports InvalidArgumentError as a usage error naming the option.
      throw new InvalidArgumentError(`${name} must be a positive integer, got ${JSON.stringify(v)}`);
    return n;
  };
}
