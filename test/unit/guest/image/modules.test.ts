import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { moduleName, parseModulesDep, resolveLoadOrder } from '../../../../src/guest/image/modules.js';

const DEP = `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/9p/9pnet.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko
`;

describe('kernel module resolution', () => {
  const table = parseModulesDep(DEP);

  it('names modules like the kernel does (dashes are underscores)', () => {
    assert.equal(moduleName('kernel/drivers/char/hw_random/virtio-rng.ko'), 'virtio_rng');
    assert.equal(moduleName('a/b/ext4.ko.xz'), 'ext4');
  });

  it('orders every module after its dependencies (virtio_ring before virtio)', () => {
    const order = resolveLoadOrder(table, ['virtio_pci', '9pnet_virtio', 'virtio-rng']).map((m) => m.name);
    assert.deepEqual(order, [
      'virtio_pci_modern_dev',
      'virtio_ring',
      'virtio',
      'virtio_pci',
      '9pnet',
      '9pnet_virtio',
      'virtio_rng',
    ]);
    for (const [i, name] of order.entries()) {
      for (const d of table.get(name)!.deps) assert.ok(order.indexOf(d) < i, `${d} before ${name}`);
    }
  });

  it('skips built-in modules and names a missing one with its dependent', () => {
    assert.deepEqual(resolveLoadOrder(table, ['ext4'], new Set(['ext4'])), []);
    const t = parseModulesDep('a.ko: b.ko\n');
    assert.throws(() => resolveLoadOrder(t, ['a']), /module b not found.*needed by a/);
  });

  it('detects dependency cycles', () => {
    const t = parseModulesDep('a.ko: b.ko\nb.ko: a.ko\n');
    assert.throws(() => resolveLoadOrder(t, ['a']), /cycle/);
  });
});
