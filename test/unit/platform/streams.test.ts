import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { relayStdin } from '../../../src/platform/streams.js';

const tick = () => new Promise((r) => setImmediate(r));

describe('relayStdin', () => {
  it('writes chunks in order, waiting for each, then ends once the input ends', async () => {
    const seen: string[] = [];
    const input = new PassThrough();
    relayStdin(input, {
      // A slow first write must not let the second overtake it.
      write: (d) =>
        new Promise<void>((r) => setTimeout(() => r(void seen.push(d.toString())), d[0] === 0x61 ? 20 : 0)),
      end: () => void seen.push('EOF'),
    });
    input.write('a');
    input.write('b');
    input.end();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(seen, ['a', 'b', 'EOF']);
  });

  it('ends the process stdin on a read error and drops failed writes', async () => {
    const seen: string[] = [];
    const input = new PassThrough();
    relayStdin(input, {
      write: () => Promise.reject(new Error('gone')),
      end: () => void seen.push('EOF'),
    });
    input.write('x');
    await tick();
    input.destroy(new Error('EIO'));
    await tick();
    await tick();
    assert.deepEqual(seen, ['EOF']);
  });
});
