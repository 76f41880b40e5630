import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { signalName } from '../../../../src/cli/runtime/common.js';
import { isVmcError } from '../../../../src/errors.js';
import { signalExitCode } from '../../../../src/platform/signals.js';

describe('runtime CLI helpers (signals)', () => {
  it('reads signals by name, with or without SIG, any case, or by number', () => {
    assert.equal(signalName('KILL'), 'SIGKILL');
    assert.equal(signalName('sigterm'), 'SIGTERM');
    assert.equal(signalName('9'), 'SIGKILL');
    assert.equal(signalName('15'), 'SIGTERM');
    for (const bad of ['SIGNOPE', '999', '', '-9'])
      assert.throws(
        () => signalName(bad),
        (e) => isVmcError(e, 'VMC_ERR_CLI_USAGE'),
        bad,
      );
    assert.equal(signalExitCode('SIGKILL'), 137);
  });
});
