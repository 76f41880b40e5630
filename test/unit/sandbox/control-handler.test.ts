import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import type { ControlReply } from '../../../src/protocol/control/messages.js';
import { type ControlledShim, controlHandler } from '../../../src/sandbox/control-handler.js';

/** A shim that records what it was asked; `owner` gives it the VM owner's operations. */
function fakeShim(owner: boolean): { shim: ControlledShim; calls: string[] } {
  const calls: string[] = [];
  const shim: ControlledShim = {
    id: 'c1',
    status: 'running',
    stopped: new Promise(() => {}),
    start: async () => void calls.push('start'),
    kill: async (s) => void calls.push(`kill ${s}`),
    pids: () => [10, 11],
    exec: async () => {
      calls.push('exec');
      return {
        write: async () => {},
        end: async () => {},
        kill: async () => {},
        resize: async () => {},
        abandon: () => {},
      };
    },
    ...(owner
      ? {
          pause: async () => void calls.push('pause'),
          resume: async () => void calls.push('resume'),
          signalAll: async (n: string, s: string) => ({ signalled: `${n} ${s}` }),
        }
      : { sandboxId: 'pod' }),
  };
  return { shim, calls };
}

describe('control request handler', () => {
  it('maps each request to one shim operation; ps and signal-all reply themselves', async () => {
    const { shim, calls } = fakeShim(true);
    const h = controlHandler(shim);
    const replies: ControlReply[] = [];
    const reply = (r: ControlReply) => void replies.push(r);
    const end = () => {};
    assert.equal(await h({ t: 'kill', signal: 'SIGTERM' }, reply, end), undefined);
    assert.equal(await h({ t: 'pause' }, reply, end), undefined);
    assert.equal(await h({ t: 'resume' }, reply, end), undefined);
    assert.equal(await h({ t: 'ps' }, reply, end), 'replied');
    assert.equal(await h({ t: 'signal-all', name: 'c1', signal: 'SIGKILL' }, reply, end), 'replied');
    assert.deepEqual(calls, ['kill SIGTERM', 'pause', 'resume']);
    assert.deepEqual(replies, [
      { t: 'ok', result: { pids: [10, 11] } },
      { t: 'ok', result: { signalled: 'c1 SIGKILL' } },
    ]);
  });

  it("sends a pod member's pause, resume and signal-all to its sandbox, by name", async () => {
    const h = controlHandler(fakeShim(false).shim);
    const none = () => {};
    for (const t of ['pause', 'resume'] as const)
      await assert.rejects(
        h({ t }, none, none),
        (e) =>
          isVmcError(e, 'VMC_ERR_OCI_UNSUPPORTED') &&
          e.message === `container c1 shares the VM of sandbox pod: ${t} the sandbox instead`,
      );
    await assert.rejects(
      h({ t: 'signal-all', name: 'c1', signal: 'SIGKILL' }, none, none),
      (e) =>
        isVmcError(e, 'VMC_ERR_INVALID_STATE') &&
        e.message === 'container c1 does not hold a VM: ask its sandbox pod',
    );
  });
});
