import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { detectAccel } from '../../../../src/hypervisor/qemu/accel.js';

describe('accelerator detection', () => {
  it('chooses TCG when /dev/kvm is missing', () => {
    assert.equal(detectAccel(() => 'flags : fpu vmx', '/nonexistent/kvm').accel, 'tcg');
  });

  it('chooses TCG when /dev/kvm exists but the CPU has no vmx/svm (broken nested virtualisation)', () => {
    const c = detectAccel(() => 'flags\t\t: fpu sse2 hypervisor', '/dev/null');
    assert.equal(c.accel, 'tcg');
    assert.match(c.reason, /no vmx\/svm/);
  });

  it('chooses KVM when the device is usable and the CPU advertises svm or vmx', () => {
    assert.equal(detectAccel(() => 'flags\t\t: fpu svm sse2', '/dev/null').accel, 'kvm');
  });
});
