import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { constants, gunzipSync } from 'node:zlib';
import { fromBinary } from '@bufbuild/protobuf';
import {
  type DescriptorProto,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from '@bufbuild/protobuf/wkt';

const ROOT = new URL('../../../../../', import.meta.url).pathname;
const CONTAINERD = '/usr/bin/containerd';
/** The packages proto/ states; each field, enum value and method of theirs must be containerd's. */
const PACKAGES =
  /^(containerd\.task\.v2|containerd\.services\.events\.ttrpc\.v1|runtimeoptions\.v1|containerd\.types\.Mount|containerd\.v1\.types|containerd\.events\.Task|io\.containerd\.cgroups\.v2|google\.rpc\.Status)\b/;

/**
 * containerd (gogo protobuf) registers every .proto it is built with as a gzipped FileDescriptorProto: find
 * each gzip member in the binary and keep those that decode as one.
 */
function descriptorsInBinary(path: string): FileDescriptorProto[] {
  const bin = readFileSync(path);
  const magic = Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0]);
  const out: FileDescriptorProto[] = [];
  for (let at = bin.indexOf(magic); at >= 0; at = bin.indexOf(magic, at + 1)) {
    try {
      const raw = gunzipSync(bin.subarray(at, at + 256 * 1024), { finishFlush: constants.Z_SYNC_FLUSH });
      const fd = fromBinary(FileDescriptorProtoSchema, raw);
      if (fd.name.endsWith('.proto')) out.push(fd);
    } catch {
      // not a descriptor
    }
  }
  return out;
}

/** One line per field (name, number, type, label, type name), enum value and method, for the packages above. */
function inventory(files: FileDescriptorProto[]): string[] {
  const lines: string[] = [];
  const message = (prefix: string, m: DescriptorProto) => {
    for (const f of m.field)
      lines.push(`${prefix}${m.name}.${f.name} = ${f.number} type=${f.type} label=${f.label} ${f.typeName}`);
    for (const n of m.nestedType) message(`${prefix}${m.name}.`, n);
    for (const e of m.enumType)
      for (const v of e.value) lines.push(`${prefix}${m.name}.${e.name}.${v.name} = ${v.number}`);
  };
  for (const fd of files) {
    const p = `${fd.package}.`;
    for (const m of fd.messageType) message(p, m);
    for (const e of fd.enumType) for (const v of e.value) lines.push(`${p}${e.name}.${v.name} = ${v.number}`);
    for (const s of fd.service)
      for (const m of s.method) lines.push(`${p}${s.name}/${m.name}(${m.inputType}) -> ${m.outputType}`);
  }
  return [...new Set(lines.filter((l) => PACKAGES.test(l)))].sort();
}

function containerdVersion(): string | null {
  if (!existsSync(CONTAINERD)) return null;
  try {
    return execFileSync(CONTAINERD, ['--version'], { encoding: 'utf8' }).split(/\s+/)[2] ?? null;
  } catch {
    return null;
  }
}

describe('proto/containerd', () => {
  const version = containerdVersion();
  const skip = version?.startsWith('1.6.')
    ? false
    : `needs containerd 1.6 at ${CONTAINERD} (found ${version})`;

  it("states the fields, enums and Task methods of the host's containerd 1.6 exactly", { skip }, () => {
    const dir = mkdtempSync('/tmp/vmc-protos-');
    try {
      const image = join(dir, 'ours.binpb');
      execFileSync(
        join(ROOT, 'node_modules/.bin/buf'),
        [
          'build',
          '-o',
          image,
          '--path',
          'proto/containerd',
          '--path',
          'proto/google',
          '--path',
          'proto/ttrpc',
        ],
        { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] },
      );
      const ours = inventory(fromBinary(FileDescriptorSetSchema, readFileSync(image)).file);
      const theirs = inventory(descriptorsInBinary(CONTAINERD));
      assert.ok(
        theirs.some((l) => l.startsWith('containerd.task.v2.Task/Create(')),
        'the binary holds shim.proto',
      );
      assert.deepEqual(ours, theirs);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
