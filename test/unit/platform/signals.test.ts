import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseSignal, signalByName, signalExitCode } from '../../../src/platform/signals.js';

describe('signals', () => {
  it('are named with or without SIG, in any case; numbers only where asked', () => {
    assert.equal(signalByName('TERM'), 'SIGTERM');
    assert.equal(signalByName('sigkill'), 'SIGKILL');
    for (const bad of ['SIGNOPE', '9', '', 'constructor', '__proto__'])
      assert.equal(signalByName(bad), null, bad);
    assert.equal(parseSignal('9'), 'SIGKILL');
    assert.equal(parseSignal('usr1'), 'SIGUSR1');
    for (const bad of ['999', '-9', '']) assert.equal(parseSignal(bad), null, bad);
  });

  it('give the exit status of a process they killed', () => {
    assert.equal(signalExitCode('SIGKILL'), 137);
    assert.equal(signalExitCode('SIGTERM'), 143);
    assert.equal(signalExitCode('SIGNOPE'), 128);
  });
});
