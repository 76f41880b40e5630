import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig, parseConfigText } from '../../../src/config/config.js';
import { isVmcError } from '../../../src/errors.js';

const parse = (text: string) => parseConfigText(text, '/etc/vmcache/configuration.toml', '/img');

describe('configuration.toml', () => {
  it('has defaults that work with the built image and no cache', () => {
    const c = loadConfig(null, '/img');
    assert.equal(c.factory.vmCacheNumber, 0);
    assert.equal(c.factory.template, false);
    assert.equal(c.factory.vmCacheEndpoint, '/run/vmcache/cache.sock');
    assert.equal(c.vm.kernel, '/img/vmlinux');
    assert.equal(c.vm.machine, 'q35');
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.vm));
  });

  it('reads Kata keys', () => {
    const c = parse(`
[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = "/k/vmlinux"
kernel_params = "foo=1 bar=2"
default_vcpus = 2
default_maxvcpus = 8
default_memory = 1024
memory_slots = 4

[factory]
enable_template = false
vm_cache_number = 3
vm_cache_endpoint = "/run/vc/cache.sock"
`);
    assert.equal(c.factory.vmCacheNumber, 3);
    assert.equal(c.factory.vmCacheEndpoint, '/run/vc/cache.sock');
    assert.deepEqual([c.vm.cpus, c.vm.maxCpus, c.vm.memoryMiB, c.vm.memorySlots], [2, 8, 1024, 4]);
    assert.deepEqual(c.vm.kernelParams, ['foo=1', 'bar=2']);
    assert.equal(c.vm.kernel, '/k/vmlinux');
    assert.equal(c.vm.initrd, '/img/initrd.img');
  });

  const bad: Array<[string, string, RegExp]> = [
    [
      'a wrong type',
      '[factory]\nvm_cache_number = "two"',
      /configuration.toml:2: \[factory\] vm_cache_number must be an integer from 0 to 64, got "two"/,
    ],
    [
      'a value out of range',
      '[hypervisor.qemu]\n\ndefault_vcpus = 0',
      /:3: \[hypervisor.qemu\] default_vcpus must be an integer from 1/,
    ],
    [
      'a relative endpoint',
      '[factory]\nvm_cache_endpoint = "cache.sock"',
      /vm_cache_endpoint must be an absolute path/,
    ],
    [
      'an unsupported machine',
      '[hypervisor.qemu]\nmachine_type = "microvm"',
      /machine_type must be one of q35/,
    ],
    [
      'another hypervisor',
      '[hypervisor.firecracker]\npath = "/x"',
      /hypervisor firecracker is not supported/,
    ],
    [
      'maxvcpus below vcpus',
      '[hypervisor.qemu]\ndefault_vcpus = 4\ndefault_maxvcpus = 2',
      /:3: \[hypervisor.qemu\] default_maxvcpus \(2\) must be at least default_vcpus \(4\)/,
    ],
    ['invalid TOML', '[factory\nx = 1', /configuration.toml:1:\d+:/],
  ];
  for (const [name, text, re] of bad) {
    it(`rejects ${name}, naming the file, line and key`, () => {
      assert.throws(
        () => parse(text),
        (e) => isVmcError(e, 'VMC_ERR_CONFIG_INVALID') && re.test(e.message),
      );
    });
  }

  it('reports unknown keys and Kata keys it ignores, with their lines', () => {
    const c = parse(
      '[factory]\nvm_cache_numbr = 2\n[hypervisor.qemu]\nenable_iothreads = true\n[agent]\nkata = {}\n',
    );
    assert.equal(c.factory.vmCacheNumber, 0);
    assert.match(c.warnings.join('\n'), /:2: \[factory\] vm_cache_numbr: unknown key/);
    assert.match(
      c.warnings.join('\n'),
      /:4: \[hypervisor.qemu\] enable_iothreads: Kata key not used by vmcache/,
    );
  });

  it('names a file it cannot read', () => {
    assert.throws(
      () => loadConfig('/nonexistent/c.toml', '/img'),
      /cannot read configuration \/nonexistent\/c.toml/,
    );
  });
});
