import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../../src/errors.js';
import { flushTranslations, parseInfoJit } from '../../../../src/hypervisor/qemu/translations.js';
import { systemClock } from '../../../../src/platform/clock.js';

const MIB = 2 ** 20;

/**
 * A TCG buffer of `size` bytes holding `used`, of which each churn pass fills `perPass`; full, it flushes
 * (the pass's remainder lands in the empty buffer). `info jit` as QEMU 7.2 prints it.
 */
function fakeTcg(used: number, perPass: number, size = 64 * MIB) {
  const s = { used, flushes: 1, rounds: [] as number[] };
  const qmp = {
    execute: async <T>(command: string, args?: Record<string, unknown>): Promise<T> => {
      assert.equal(command, 'human-monitor-command');
      assert.equal(args?.['command-line'], 'info jit');
      return `Translation buffer state:\r\ngen code size       ${s.used}/${size}\r\n\r\nStatistics:\r\nTB flush count      ${s.flushes}\r\n` as T;
    },
  };
  const churn = async (passes: number) => {
    s.rounds.push(passes);
    for (let i = 0; i < passes; i++) {
      s.used += perPass;
      if (s.used > size) {
        s.flushes++;
        s.used = perPass;
      }
    }
  };
  return { s, qmp, churn };
}

describe('translation buffer', () => {
  it('parses info jit, and refuses text without the buffer', () => {
    const text =
      'gen code size       908307/67103744\r\nTB count            1577\r\nTB flush count      2\r\n';
    assert.deepEqual(parseInfoJit(text), { usedBytes: 908307, sizeBytes: 67103744, flushes: 2 });
    assert.throws(
      () => parseInfoJit('Translation buffer state:'),
      (e) => isVmcError(e, 'VMC_ERR_QMP_PROTOCOL'),
    );
  });

  it('sizes the second churn from the first pass and stops at the flush', async () => {
    const t = fakeTcg(40 * MIB, 6 * MIB);
    assert.equal(await flushTranslations(t.qmp, t.churn, systemClock), 5);
    assert.deepEqual(t.s.rounds, [1, 3, 1]); // 18 MiB left at 6 MiB a pass: 3, then 0 left, one more flushes
    assert.equal(t.s.flushes, 2);
  });

  it('gives up with an error after its rounds when nothing fills the buffer', async () => {
    const t = fakeTcg(10 * MIB, 0);
    await assert.rejects(
      flushTranslations(t.qmp, t.churn, systemClock, { maxPasses: 3 }),
      (e) => isVmcError(e, 'VMC_ERR_INVALID_STATE') && /did not flush after 16 churn passes/.test(e.message),
    );
    assert.deepEqual(t.s.rounds, [1, 3, 3, 3, 3, 3]);
  });

  it('stops at its deadline', async () => {
    const t = fakeTcg(10 * MIB, 0);
    await assert.rejects(
      flushTranslations(t.qmp, t.churn, systemClock, { deadlineMs: -1 }),
      /after 0 churn passes/,
    );
    assert.deepEqual(t.s.rounds, []);
  });
});
