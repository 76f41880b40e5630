import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { toOciStatus } from '../../../src/oci/state.js';

describe('OCI state', () => {
  it('maps internal states to OCI states', () => {
    assert.equal(toOciStatus('ready'), 'created');
    assert.equal(toOciStatus('running'), 'running');
    assert.equal(toOciStatus('stopped'), 'stopped');
    assert.equal(toOciStatus('paused'), 'paused');
  });
});
