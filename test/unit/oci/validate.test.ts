import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isVmcError } from '../../../src/errors.js';
import { At, preview } from '../../../src/oci/validate.js';

describe('config.json validation helpers', () => {
  it('never puts an unbounded value into a message', () => {
    let deep: unknown = [];
    for (let i = 0; i < 100_000; i++) deep = [deep];
    assert.throws(
      () => new At(deep, 'x', 'f').fail('a string'),
      (e) => isVmcError(e, 'VMC_ERR_OCI_INVALID') && /^f: x must be a string, got \[\[\[/.test(e.message),
    );
    assert.equal(preview('x'.repeat(1_000_000), 10), '"xxxxxxxxx…');
    assert.equal(preview({ a: [1, 'b', null, true] }), '{"a":[1,"b",null,true]}');
    assert.equal(preview(deep).length, 81);
  });
});
