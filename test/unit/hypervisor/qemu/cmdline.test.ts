import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defaultVmSpec } from '../../../../src/config/defaults.js';
import { buildQemuArgs, HOTPLUG_ROOT_PORTS, rootPortId } from '../../../../src/hypervisor/qemu/cmdline.js';
import { spareTapName } from '../../../../src/hypervisor/qemu/tap-names.js';
import { vmFiles } from '../../../../src/hypervisor/types.js';
import { SPARE_NIC_MAC } from '../../../../src/protocol/spare-nic.js';

function opt(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

describe('QEMU command line', () => {
  const files = vmFiles('/run/vmcache/vm/abc');

  it('uses TCG with a capped translation cache when there is no KVM', () => {
    const args = buildQemuArgs(defaultVmSpec('/img', 'tcg'), files, 'abc');
    assert.deepEqual(opt(args, '-machine'), ['q35']);
    assert.deepEqual(opt(args, '-accel'), ['tcg,thread=single,tb-size=64']);
    assert.deepEqual(opt(args, '-cpu'), ['max']);
  });

  it('uses accel=kvm and the host CPU with KVM', () => {
    const args = buildQemuArgs(defaultVmSpec('/img', 'kvm'), files, 'abc');
    assert.deepEqual(opt(args, '-machine'), ['q35,accel=kvm']);
    assert.deepEqual(opt(args, '-accel'), []);
    assert.deepEqual(opt(args, '-cpu'), ['host']);
  });

  it('sizes CPUs and memory with hot-plug headroom', () => {
    const spec = {
      ...defaultVmSpec('/img', 'tcg'),
      cpus: 2,
      maxCpus: 4,
      memoryMiB: 768,
      memorySlots: 8,
      maxMemoryMiB: 4096,
    };
    const args = buildQemuArgs(spec, files, 'abc');
    assert.deepEqual(opt(args, '-smp'), ['2,maxcpus=4']);
    assert.deepEqual(opt(args, '-m'), ['768M,slots=8,maxmem=4096M']);
  });

  it('puts every socket and log in the VM state directory and exports only its shared/ directory', () => {
    const args = buildQemuArgs(defaultVmSpec('/img', 'tcg'), files, 'abc');
    assert.deepEqual(opt(args, '-qmp'), ['unix:/run/vmcache/vm/abc/qmp.sock,server=on,wait=off']);
    assert.deepEqual(opt(args, '-pidfile'), ['/run/vmcache/vm/abc/pid']);
    assert.ok(opt(args, '-chardev')[0]!.includes('path=/run/vmcache/vm/abc/agent.sock'));
    const fsdev = opt(args, '-fsdev');
    assert.equal(fsdev.length, 1);
    assert.match(fsdev[0]!, /path=\/run\/vmcache\/vm\/abc\/shared,/);
    assert.match(fsdev[0]!, /multidevs=remap/);
    assert.deepEqual(opt(args, '-serial'), ['file:/run/vmcache/vm/abc/console.log']);
  });

  it('boots the image read-only with vmgenid and the kernel parameters appended', () => {
    const spec = { ...defaultVmSpec('/img', 'tcg'), kernelParams: ['foo=bar'] };
    const args = buildQemuArgs(spec, files, 'abc');
    assert.ok(
      opt(args, '-drive')[0]!.includes('file=/img/rootfs.img') &&
        opt(args, '-drive')[0]!.includes('readonly=on'),
    );
    assert.ok(opt(args, '-device').some((d) => d.startsWith('vmgenid')));
    const append = opt(args, '-append')[0]!;
    assert.match(append, /console=ttyS0/);
    assert.match(append, /memhp_default_state=online_movable/);
    assert.match(append, /(^| )swiotlb=noforce( |$)/); // no 64 MiB bounce buffer in every guest
    assert.ok(append.endsWith('foo=bar'));
    assert.deepEqual(opt(args, '-kernel'), ['/img/vmlinux']);
  });
  it('adds the spare PCIe root ports that NICs are hot-plugged onto, by the ids rootPortId gives', () => {
    const args = buildQemuArgs(defaultVmSpec('/img', 'tcg'), files, 'abc');
    const ports = opt(args, '-device').filter((d) => d.startsWith('pcie-root-port,'));
    assert.equal(ports.length, HOTPLUG_ROOT_PORTS);
    assert.deepEqual(
      ports.map((d) => /id=([^,]+)/.exec(d)?.[1]),
      ['rp1', 'rp2', 'rp3', 'rp4'].slice(0, HOTPLUG_ROOT_PORTS),
    );
    assert.equal(rootPortId(0), 'rp1');
  });
  it("gives every VM a spare NIC on the root bus, its tap named for the VM (QEMU makes it), the guest's placeholder MAC", () => {
    const args = buildQemuArgs(defaultVmSpec('/img', 'tcg'), files, 'abc');
    assert.deepEqual(opt(args, '-netdev'), [
      `tap,id=sparenet,ifname=${spareTapName('abc')},script=no,downscript=no`,
    ]);
    assert.deepEqual(
      opt(args, '-device').filter((d) => d.startsWith('virtio-net-pci')),
      [`virtio-net-pci,netdev=sparenet,id=sparenic,mac=${SPARE_NIC_MAC},bus=pcie.0`],
    );
    assert.notEqual(spareTapName('abc'), spareTapName('abd'));
    assert.ok(spareTapName('abc').length <= 15);
    assert.match(SPARE_NIC_MAC, /^02:/, 'locally administered');
  });
});
