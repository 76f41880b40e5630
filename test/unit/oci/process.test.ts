import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatEnv } from '../../../src/oci/env.js';
import { MAX_ADDITIONAL_GIDS, parseProcess } from '../../../src/oci/process.js';
import { At } from '../../../src/oci/validate.js';

const at = (v: unknown) => new At(v, '', 'p.json');
const invalid = (re: RegExp) => ({ code: 'VMC_ERR_OCI_INVALID', message: re });

describe('OCI process object', () => {
  it('reads args, env, cwd and user', () => {
    const p = parseProcess(
      at({ args: ['sh'], env: ['A=1', 'B=x=y'], cwd: '/', user: { uid: 5, gid: 6, additionalGids: [7] } }),
      'p.json',
    );
    assert.deepEqual(p, {
      args: ['sh'],
      env: [
        { name: 'A', value: '1' },
        { name: 'B', value: 'x=y' },
      ],
      cwd: '/',
      uid: 5,
      gid: 6,
      additionalGids: [7],
    });
    assert.deepEqual(formatEnv(p.env), ['A=1', 'B=x=y']);
  });

  it("config.json's needs a program and a user; an exec's may leave both to its caller", () => {
    assert.throws(
      () => parseProcess(at({ args: [], cwd: '/', user: { uid: 0, gid: 0 } }), 'p.json'),
      invalid(/args/),
    );
    assert.throws(
      () => parseProcess(at({ args: ['sh'], cwd: '/' }), 'p.json'),
      invalid(/user must be an object/),
    );
    const e = parseProcess(at({ args: [], cwd: '/tmp' }), 'p.json', 'exec');
    assert.deepEqual([e.args, e.uid, e.gid, e.additionalGids], [[], 0, 0, []]);
  });

  it('refuses what the guest helper cannot take, naming the JSON path', () => {
    const user = { uid: 0, gid: 0 };
    assert.throws(
      () => parseProcess(at({ args: ['a\u0000b'], cwd: '/', user }), 'p.json', 'exec'),
      invalid(/args\[0\]/),
    );
    assert.throws(
      () => parseProcess(at({ args: ['sh'], cwd: 'rel', user }), 'p.json', 'exec'),
      invalid(/cwd/),
    );
    assert.throws(
      () =>
        parseProcess(at({ args: ['sh'], cwd: '/', user: { uid: 2 ** 32 - 1, gid: 0 } }), 'p.json', 'exec'),
      invalid(/user\.uid/),
    );
    const gids = Array.from({ length: MAX_ADDITIONAL_GIDS + 1 }, (_, i) => i);
    assert.throws(
      () => parseProcess(at({ args: ['sh'], cwd: '/', user: { ...user, additionalGids: gids } }), 'p.json'),
      invalid(/additionalGids/),
    );
  });
});
