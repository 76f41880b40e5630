import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assetAnnotations, containerType, sandboxId } from '../../../src/oci/annotations.js';

describe('OCI annotations (CRI and Kata)', () => {
  it("reads the container type and sandbox id from CRI annotations in Kata's order", () => {
    assert.equal(containerType({}, 'f'), 'sandbox');
    assert.equal(containerType({ 'io.kubernetes.cri.container-type': 'container' }, 'f'), 'container');
    assert.equal(containerType({ 'io.kubernetes.cri-o.ContainerType': 'sandbox' }, 'f'), 'sandbox');
    assert.equal(containerType({ 'io.kubernetes.docker.type': 'podsandbox' }, 'f'), 'sandbox');
    assert.equal(containerType({ 'io.kubernetes.docker.type': 'container' }, 'f'), 'container');
    // The first key present decides.
    assert.equal(
      containerType(
        { 'io.kubernetes.cri.container-type': 'sandbox', 'io.kubernetes.docker.type': 'container' },
        'f',
      ),
      'sandbox',
    );
    assert.throws(
      () => containerType({ 'io.kubernetes.cri-o.ContainerType': 'pod' }, 'f'),
      /io\.kubernetes\.cri-o\.ContainerType.*must be one of sandbox, container, got "pod"/,
    );
    assert.throws(
      () => containerType({ 'io.kubernetes.docker.type': 'sandbox' }, 'f'),
      /must be one of podsandbox, container/,
    );
    assert.equal(sandboxId({ 'io.kubernetes.cri.sandbox-id': 'a', 'io.kubernetes.sandbox.id': 'c' }), 'a');
    assert.equal(sandboxId({ 'io.kubernetes.cri-o.SandboxID': 'b' }), 'b');
    assert.equal(sandboxId({ 'io.kubernetes.sandbox.id': 'c' }), 'c');
    assert.equal(sandboxId({}), undefined);
  });

  it('carries Kata asset annotations (path and hash) into the config', () => {
    const h = 'a'.repeat(64);
    assert.deepEqual(
      assetAnnotations(
        {
          'io.katacontainers.config.hypervisor.kernel': '/k',
          'io.katacontainers.config.hypervisor.kernel_hash': h,
        },
        'f',
      ),
      { kernel: { path: '/k', hash: h } },
    );
    assert.throws(
      () => assetAnnotations({ 'io.katacontainers.config.hypervisor.image': 'rel' }, 'f'),
      /must be an absolute path/,
    );
    assert.throws(
      () => assetAnnotations({ 'io.katacontainers.config.hypervisor.initrd_hash': h }, 'f'),
      /given without/,
    );
  });
});
