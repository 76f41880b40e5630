import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { status as Code, Metadata, type ServiceError } from '@grpc/grpc-js';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { type ErrorCode, isVmcError, VmcError } from '../../../src/errors.js';
import {
  decodeConfig,
  decodeVm,
  ERROR_CODE_METADATA,
  encodeConfig,
  encodeVm,
  formatShape,
  fromGrpcError,
  MAX_DETAILS_CHARS,
  parseShape,
  toGrpcError,
} from '../../../src/factory/cache-wire.js';
import { vmFiles } from '../../../src/hypervisor/types.js';
import type { VmRecord } from '../../../src/vm/record.js';

const spec = defaultVmSpec('/img', 'tcg');

/** A Config reply whose Data is `data` as JSON. */
const config = (data: unknown) => ({ Data: Buffer.from(JSON.stringify(data)), AgentConfig: Buffer.alloc(0) });

/** What grpc-js hands a client for a failed call. */
function serviceError(code: Code, details: string, md = new Metadata()): ServiceError {
  return Object.assign(new Error(`${code} ${Code[code]}: ${details}`), { code, details, metadata: md });
}

/** Throws unless `fn` throws VMC_ERR_CACHE_PROTOCOL with a message matching `re`. */
function protocolError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => isVmcError(e, 'VMC_ERR_CACHE_PROTOCOL') && re.test(e.message));
}

describe('cache wire: Config', () => {
  it('round-trips the spec, with the agent configuration beside it', () => {
    const cfg = encodeConfig(spec, { dialTimeoutMs: 1_234 });
    assert.deepEqual(decodeConfig(cfg), spec);
    const agent = JSON.parse(Buffer.from(cfg.AgentConfig).toString());
    assert.equal(agent.protocol, 'vmcache-agent');
    assert.equal(agent.dialTimeoutMs, 1_234);
  });

  it('refuses Data that is not JSON', () => {
    protocolError(
      () => decodeConfig({ Data: Buffer.from('{nope'), AgentConfig: Buffer.alloc(0) }),
      /not JSON/,
    );
  });

  it('refuses a spec of the wrong shape, naming the field and never echoing the value', () => {
    protocolError(() => decodeConfig(config({ ...spec, cpus: 'secret-two' })), /Data\.cpus/);
    assert.throws(
      () => decodeConfig(config({ ...spec, cpus: 'secret-two' })),
      (e: Error) => !e.message.includes('secret-two'),
    );
    protocolError(() => decodeConfig(config({ ...spec, accel: 'hvf' })), /Data\.accel/);
    protocolError(() => decodeConfig(config({ ...spec, kernelParams: [1] })), /Data\.kernelParams\.0/);
    const { kernel: _, ...noKernel } = spec;
    protocolError(() => decodeConfig(config(noKernel)), /Data\.kernel\b/);
    protocolError(() => decodeConfig(config([spec])), /invalid VM spec/);
  });
});

describe('cache wire: VM', () => {
  const record: VmRecord = {
    version: 1,
    id: '0123456789ab',
    createdAt: 1,
    spec,
    files: vmFiles('/run/vm/0123456789ab'),
    qemu: { pid: 42, startTime: 7 },
    owner: null,
    hotplug: { cpus: 1, memoryMiB: 256 },
  };

  it('round-trips the record and the lease; Kata fields carry the grown size', () => {
    const g = encodeVm(record, { leaseId: 'abc', leaseExpiresUnixMs: 99 });
    assert.equal(g.cpu, spec.cpus + 1);
    assert.equal(g.memory, spec.memoryMiB + 256);
    assert.equal(g.cpuDelta, 1);
    assert.deepEqual(decodeVm(g), { record, leaseId: 'abc', leaseExpiresUnixMs: 99 });
  });

  it('refuses a VM whose id is not its record', () => {
    const g = encodeVm(record, { leaseId: '', leaseExpiresUnixMs: 0 });
    protocolError(() => decodeVm({ ...g, id: 'ffffffffffff' }), /does not match its record/);
    protocolError(() => decodeVm({ ...g, hypervisor: Buffer.from('[]') }), /version/);
  });
});

describe('cache wire: vmcache-shape', () => {
  it('formats a shape as <vCPUs>x<MiB>, and parses it back', () => {
    assert.equal(formatShape({ cpus: 2, memoryMiB: 1024 }), '2x1024');
    for (const shape of [
      { cpus: 1, memoryMiB: 1 },
      { cpus: 1, memoryMiB: 512 },
      { cpus: 2, memoryMiB: 1024 },
      { cpus: 16, memoryMiB: 65_536 },
      { cpus: 1024, memoryMiB: 16_777_216 }, // the largest accepted
    ])
      assert.deepEqual(parseShape(formatShape(shape)), shape);
    // formatShape reads only the two fields: a VmSpec formats as its shape.
    assert.equal(formatShape(spec), `${spec.cpus}x${spec.memoryMiB}`);
  });

  it('refuses anything but two decimal numbers in range, without sign, padding, spaces or another case', () => {
    for (const bad of [
      '0x512',
      '2x0',
      '-1x512',
      '+1x512',
      '2x512x1',
      ' 2x512',
      '2x512 ',
      '2x512\n',
      '2X512',
      '01x512',
      '2x0512',
      '99999x1',
      '1025x1', // vCPUs over 1024
      '1x16777217', // MiB over 16777216 (16 TiB)
      '1x99999999',
      '2.0x512',
      '2x',
      'x512',
      '2',
      '',
    ])
      assert.equal(parseShape(bad), null, JSON.stringify(bad));
  });
});

describe('cache wire: errors', () => {
  it('sends a VmcError as its status and code, and the client raises that same code', () => {
    for (const [code, status] of [
      ['VMC_ERR_CACHE_TIMEOUT', Code.DEADLINE_EXCEEDED],
      // Not UNAVAILABLE, which a client without the metadata would take for "no server" and boot directly.
      ['VMC_ERR_CACHE_MISS', Code.RESOURCE_EXHAUSTED],
      ['VMC_ERR_CACHE_CLOSED', Code.UNAVAILABLE],
      ['VMC_ERR_CACHE_LEASE', Code.FAILED_PRECONDITION],
      ['VMC_ERR_CACHE_PROTOCOL', Code.INVALID_ARGUMENT],
      ['VMC_ERR_VM_DEAD', Code.INTERNAL],
    ] as [ErrorCode, Code][]) {
      const sent = toGrpcError(new VmcError(code, 'why'));
      assert.equal(sent.code, status, code);
      const got = fromGrpcError(serviceError(sent.code, sent.details, sent.metadata), 'GetBaseVM');
      assert.equal(got.code, code);
      assert.equal(got.message, 'cache GetBaseVM: why');
      assert.equal(got.details.grpcCode, status);
    }
  });

  it('maps a status without a known code (grpc-js itself, a Kata server) from the status alone', () => {
    const from = (c: Code, md?: Metadata) => fromGrpcError(serviceError(c, 'x', md), 'Config').code;
    assert.equal(from(Code.UNAVAILABLE), 'VMC_ERR_CACHE_UNAVAILABLE');
    assert.equal(from(Code.DEADLINE_EXCEEDED), 'VMC_ERR_CACHE_TIMEOUT');
    assert.equal(from(Code.FAILED_PRECONDITION), 'VMC_ERR_CACHE_LEASE');
    assert.equal(from(Code.UNKNOWN), 'VMC_ERR_CACHE_PROTOCOL');
    // grpc-js raises RESOURCE_EXHAUSTED itself (a message too large): a miss only when the server says so.
    assert.equal(from(Code.RESOURCE_EXHAUSTED), 'VMC_ERR_CACHE_PROTOCOL');
    assert.equal(from(Code.INTERNAL), 'VMC_ERR_CACHE_PROTOCOL');
    const unknown = new Metadata();
    unknown.set(ERROR_CODE_METADATA, 'VMC_ERR_NO_SUCH_THING');
    assert.equal(from(Code.UNAVAILABLE, unknown), 'VMC_ERR_CACHE_UNAVAILABLE');
    const inherited = new Metadata();
    inherited.set(ERROR_CODE_METADATA, 'toString');
    assert.equal(from(Code.INTERNAL, inherited), 'VMC_ERR_CACHE_PROTOCOL');
  });

  it('bounds the status message, and never passes grpc-js one that encodeURI refuses', () => {
    const e = toGrpcError(
      new VmcError('VMC_ERR_CACHE_PROTOCOL', `${'x'.repeat(MAX_DETAILS_CHARS - 1)}\u{1F600}tail`),
    );
    assert.equal(e.code, Code.INVALID_ARGUMENT);
    assert.deepEqual(e.metadata.get('vmcache-error-code'), ['VMC_ERR_CACHE_PROTOCOL']);
    assert.ok(e.details.length <= MAX_DETAILS_CHARS + 20, `${e.details.length} chars`);
    assert.match(e.details, /truncated/);
    assert.doesNotThrow(() => encodeURI(e.details), 'the cut surrogate pair was replaced');
    assert.equal(toGrpcError(new Error('lone \ud800 surrogate')).details, 'lone \uFFFD surrogate');
    assert.equal(toGrpcError(new Error('boom')).code, Code.INTERNAL);
  });
});
