import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { readBundle } from '../../../src/oci/bundle.js';
import { containerError } from '../../../src/protocol/agent/messages.js';
import { containerExecOf } from '../../../src/sandbox/process.js';
import { bundleDirs, minimalConfig } from '../../helpers/bundle-json.js';

const statfs = () => ({ bsize: 4096, blocks: 0 });
const base = minimalConfig;

describe('OCI hooks (read by readBundle, run on the host or in the guest)', () => {
  const dirOf = bundleDirs('vmc-hooks-');
  const read = (config: unknown) => readBundle(dirOf(JSON.stringify(config)), statfs);
  const rejects = (config: unknown, re: RegExp) =>
    assert.throws(
      () => read(config),
      (e) => isVmcError(e, 'VMC_ERR_OCI_INVALID') && re.test(e.message),
    );

  it('reads hooks with their argv, environment and timeout, and refuses bad ones', () => {
    const c = read({
      ...base(),
      hooks: {
        prestart: [{ path: '/bin/hook', args: ['hook', '-x'], env: ['A=1'], timeout: 5 }],
        poststop: [{ path: '/bin/post' }],
      },
    });
    assert.deepEqual(c.hooks.prestart, [
      { path: '/bin/hook', args: ['hook', '-x'], env: ['A=1'], timeout: 5 },
    ]);
    assert.deepEqual(c.hooks.poststop, [{ path: '/bin/post', args: ['/bin/post'], env: [] }]);
    assert.deepEqual(c.hooks.startContainer, []);
    rejects(
      { ...base(), hooks: { prestart: [{ path: 'rel' }] } },
      /hooks\.prestart\[0\]\.path must be an absolute path/,
    );
    rejects(
      { ...base(), hooks: { poststart: [{ path: '/x', timeout: 0 }] } },
      /hooks\.poststart\[0\]\.timeout must be an integer from 1 to 600/,
    );
    rejects(
      { ...base(), hooks: { createRuntime: [{ path: '/x', args: [1] }] } },
      /hooks\.createRuntime\[0\]\.args\[0\] must be a string/,
    );
    // startContainer hooks travel to the guest with a timeout always set and the OCI state.
    const s = read({ ...base(), hooks: { startContainer: [{ path: '/bin/in-guest' }] } });
    const x = containerExecOf('c2', s, [], undefined, 42);
    assert.deepEqual(x.startHooks, [
      { path: '/bin/in-guest', args: ['/bin/in-guest'], env: [], timeout: 120 },
    ]);
    assert.equal(JSON.parse(x.hookState!).pid, 42);
    assert.equal(containerError(x), null);
  });
});
