import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { busyboxRootfs } from './bundle.js';

/** What an image's config says about its process (`config` of the OCI image configuration). */
export interface ImageProcess {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
}

/**
 * An OCI image archive (an image layout in a tar, as `ctr images import` reads it) of the busybox root file
 * system, named `name` (a full reference: `docker.io/vmcache/busybox:test`), made locally: no registry.
 * Returns the archive's path.
 */
export function busyboxImageArchive(dir: string, name: string, process: ImageProcess): string {
  const layout = join(dir, 'layout');
  const blobs = join(layout, 'blobs/sha256');
  mkdirSync(blobs, { recursive: true });
  const rootfs = busyboxRootfs(join(dir, 'tree'));
  /** Stores `data` as a blob and returns its descriptor. */
  const blob = (mediaType: string, data: Buffer) => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(blobs, hex), data);
    return { mediaType, digest: `sha256:${hex}`, size: data.length };
  };
  const layerTar = join(dir, 'layer.tar');
  execFileSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', layerTar, '.']);
  const layerData = readFileSync(layerTar);
  const layer = blob('application/vnd.oci.image.layer.v1.tar', layerData);
  const config = blob(
    'application/vnd.oci.image.config.v1+json',
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], ...process },
        rootfs: { type: 'layers', diff_ids: [layer.digest] },
      }),
    ),
  );
  const manifest = blob(
    'application/vnd.oci.image.manifest.v1+json',
    Buffer.from(JSON.stringify({ schemaVersion: 2, config, layers: [layer] })),
  );
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          ...manifest,
          platform: { architecture: 'amd64', os: 'linux' },
          annotations: { 'io.containerd.image.name': name },
        },
      ],
    }),
  );
  const archive = join(dir, 'image.tar');
  execFileSync('tar', ['-C', layout, '-cf', `${archive}.tmp`, '.']);
  renameSync(`${archive}.tmp`, archive);
  return archive;
}
