import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseEnv } from '../../../src/oci/env.js';

describe('OCI process.env', () => {
  it('splits env at the first = and trims quotes and spaces', () => {
    assert.deepEqual(parseEnv(['A=b=c', ' B = "quoted value" ', "C='x'", 'D='], 'f'), [
      { name: 'A', value: 'b=c' },
      { name: 'B', value: 'quoted value' },
      { name: 'C', value: 'x' },
      { name: 'D', value: '' },
    ]);
    assert.throws(() => parseEnv(['=x'], 'f'), /process\.env\[0\] "=x" has an empty name/);
    assert.throws(() => parseEnv(['NOEQUALS'], 'f'), /process\.env\[0\] "NOEQUALS" is not NAME=VALUE/);
  });
});
