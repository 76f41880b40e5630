import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig, parseConfigText } from '../../../src/config/config.js';
import { isVmcError } from '../../../src/errors.js';
import { BUILDER_VERSION } from '../../../src/guest/image/manifest.js';

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
    // /k/vmlinux is not a vmcache guest image: the built one is used, and the warning says so.
    assert.equal(c.vm.kernel, '/img/vmlinux');
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
      '[hypervisor.qemu]\n\ndefault_vcpus = 65',
      /:3: \[hypervisor.qemu\] default_vcpus must be an integer from 1 to 64, 0 \(the default\) or negative/,
    ],
    [
      'a relative endpoint',
      '[factory]\nvm_cache_endpoint = "cache.sock"',
      /vm_cache_endpoint must be an absolute path/,
    ],
    [
      'an unsupported machine',
      '[hypervisor.qemu]\nmachine_type = "microvm"',
      /:2: \[hypervisor.qemu\] machine_type "microvm" is not supported: vmcache needs q35, for memory and vCPU hot-plug/,
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
    ['an unknown miss policy', '[cache]\nmiss_policy = "later"', /miss_policy .*one of wait, fail, cold/],
  ];
  for (const [name, text, re] of bad) {
    it(`rejects ${name}, naming the file, line and key`, () => {
      assert.throws(
        () => parse(text),
        (e) => isVmcError(e, 'VMC_ERR_CONFIG_INVALID') && re.test(e.message),
      );
    });
  }

  it('reads [cache] miss_policy, the server default for requests that do not choose (wait unless set)', () => {
    assert.equal(loadConfig(null, '/img').cache.missPolicy, 'wait');
    for (const p of ['wait', 'fail', 'cold'] as const)
      assert.equal(parse(`[cache]\nmiss_policy = "${p}"`).cache.missPolicy, p);
  });

  it('reports the Kata keys it ignores and unknown keys in one warning, grouped by why', () => {
    const c = parse(
      '[factory]\nnote = 2\n[hypervisor.qemu]\nenable_iothreads = true\n[runtime]\ndisable_guest_seccomp = true\n' +
        '[agent.kata]\nkernel_modules = []\n[extra]\n',
    );
    assert.deepEqual(c.warnings, [
      '/etc/vmcache/configuration.toml: 5 names not acted on by vmcache, ignored; ' +
        'covered by the VM boundary: [runtime] disable_guest_seccomp; ' +
        "not applicable to vmcache's guest: [hypervisor.qemu] enable_iothreads, [agent.kata] kernel_modules; " +
        'unknown: [factory] note (line 2), [extra] (line 9)',
    ]);
  });

  it('refuses a misspelt key or section, naming the one it is close to', () => {
    const rejects = (text: string, re: RegExp) =>
      assert.throws(
        () => parse(text),
        (e) => isVmcError(e, 'VMC_ERR_CONFIG_INVALID') && re.test(e.message),
      );
    rejects(
      '[factory]\nvm_cache_numbr = 2\n',
      /:2: \[factory\] vm_cache_numbr: unknown key; did you mean vm_cache_number\?/,
    );
    rejects('[factory]\nenable_templat = true\n', /did you mean enable_template\?/);
    rejects('[hypervisor.qemu]\nenable_iothread = true\n', /did you mean enable_iothreads\?/);
    rejects(
      '[factroy]\nvm_cache_number = 2\n',
      /:1: \[factroy\]: unknown section; did you mean \[factory\]\?/,
    );
    // Far from every key: unknown, not an error.
    assert.equal(parse('[factory]\ncolour = 1\n').warnings.length, 1);
  });

  it("reads Kata's [agent.kata] and runtime-rs's [hypervisor.qemu.factory], and refuses a key set in both spellings", () => {
    const c = parse('[agent.kata]\ndial_timeout = 45\n[hypervisor.qemu.factory]\nenable_template = true\n');
    assert.equal(c.agentDialTimeoutMs, 45_000);
    assert.equal(c.factory.template, true);
    assert.deepEqual(c.warnings, []);
    assert.throws(
      () => parse('[agent]\ndial_timeout = 30\n[agent.kata]\ndial_timeout = 45\n'),
      /:4: \[agent.kata\] dial_timeout is also set in \[agent\] \(line 2\): set it once/,
    );
  });

  it("applies Kata's value rules: 0 and negative counts mean the host's maximum", () => {
    const host = { cpus: 6, memoryMiB: 24_000 };
    const kata = (text: string) => parseConfigText(`[hypervisor.qemu]\n${text}`, 'k.toml', '/img', host).vm;
    const zero = kata(
      'default_vcpus = 0\ndefault_maxvcpus = 0\ndefault_memory = 2048\ndefault_maxmemory = 0\n',
    );
    assert.deepEqual([zero.cpus, zero.maxCpus, zero.memoryMiB, zero.maxMemoryMiB], [1, 6, 2048, 24_000]);
    const all = kata('default_vcpus = -1\ndefault_maxvcpus = 2\n');
    assert.deepEqual([all.cpus, all.maxCpus], [6, 6]);
    const big = parseConfigText('[hypervisor.qemu]\ndefault_maxvcpus = 0\n', 'k.toml', '/img', {
      cpus: 512,
      memoryMiB: 4 * 2 ** 20,
    }).vm;
    assert.deepEqual([big.maxCpus, big.maxMemoryMiB], [64, 8192]);
    assert.equal(
      parseConfigText('[hypervisor.qemu]\ndefault_maxmemory = 0\n', 'k.toml', '/img', {
        cpus: 2,
        memoryMiB: 4 * 2 ** 20,
      }).vm.maxMemoryMiB,
      1_048_576,
    );
  });

  it('uses a configured guest image only when it is a vmcache image, and says so once otherwise', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vmc-img-'));
    try {
      writeFileSync(join(dir, 'vmlinux'), 'k');
      writeFileSync(join(dir, 'rootfs.img'), 'r');
      writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ builderVersion: BUILDER_VERSION }));
      const ours = parse(`[hypervisor.qemu]\nkernel = "${dir}/vmlinux"\nimage = "${dir}/rootfs.img"\n`);
      assert.deepEqual(
        [ours.vm.kernel, ours.vm.initrd, ours.vm.rootDisk],
        [`${dir}/vmlinux`, '/img/initrd.img', `${dir}/rootfs.img`],
      );
      assert.deepEqual(ours.warnings, []);
      const kata = parse(
        `[hypervisor.qemu]\nkernel = "${dir}/vmlinux"\nimage = "/opt/kata/share/kata-containers/kata-containers.img"\n`,
      );
      assert.deepEqual([kata.vm.kernel, kata.vm.rootDisk], ['/img/vmlinux', '/img/rootfs.img']);
      assert.deepEqual(kata.warnings, [
        '/etc/vmcache/configuration.toml: [hypervisor.qemu] image /opt/kata/share/kata-containers/kata-containers.img ' +
          "(missing): not a vmcache guest image (Kata's guest assets carry Kata's agent); using vmcache's own image in /img",
      ]);
      rmSync(join(dir, 'manifest.json'));
      assert.match(
        parse(`[hypervisor.qemu]\nkernel = "${dir}/vmlinux"\n`).warnings[0]!,
        /kernel .*vmlinux \(no vmcache manifest.json beside it\)/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names a file it cannot read', () => {
    assert.throws(
      () => loadConfig('/nonexistent/c.toml', '/img'),
      /cannot read configuration \/nonexistent\/c.toml/,
    );
  });
});
