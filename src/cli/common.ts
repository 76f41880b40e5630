import { join } from 'node:path';
import { InvalidArgumentError } from 'commander';
import { defaultVmSpec } from '../config/defaults.js';
import { VmcError } from '../errors.js';
import { IMAGE_FILES, outputsPresent, readManifest } from '../guest/image/manifest.js';
import { detectAccel } from '../hypervisor/qemu/accel.js';
import type { VmSpec } from '../hypervisor/types.js';
import type { CliContext } from './context.js';

/** The VM spec for this host, after checking that the guest image is built. */
export function hostVmSpec(ctx: CliContext): VmSpec {
  const dir = ctx.paths.imageDir;
  if (
    !readManifest(dir) ||
    !outputsPresent(dir, [IMAGE_FILES.kernel, IMAGE_FILES.initrd, IMAGE_FILES.rootfs])
  ) {
    throw new VmcError(
      'VMC_ERR_IMAGE_MISSING',
      `no guest image in ${dir} (missing or incomplete ${join(dir, IMAGE_FILES.manifest)}); run 'vmcache image build'`,
    );
  }
  return defaultVmSpec(dir, detectAccel().accel);
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
