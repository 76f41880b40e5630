/**
 * One client process of the concurrency scenario: `node client.js SOCKET N` makes N concurrent getVM + exec +
 * destroy against the cache at SOCKET and prints one JSON line per request: the VM it got (id), whether the VM
 * answered with what was asked (usable), the wait, and the error code if the request was refused.
 */
import { randomBytes } from 'node:crypto';
import { connectCache } from '../src/api.js';
import { isVmcError } from '../src/errors.js';
import { withDeadline } from './report.js';

const [socket, count] = process.argv.slice(2);
const cache = await connectCache(socket!);
await Promise.all(
  Array.from({ length: Number(count ?? 10) }, async () => {
    const t0 = performance.now();
    try {
      const vm = await withDeadline('getVM', 90_000, () => cache.getVM());
      const waitMs = performance.now() - t0;
      const token = randomBytes(8).toString('hex');
      let usable = false;
      try {
        const r = await withDeadline('exec', 60_000, () => vm.run(['/bin/echo', token]));
        usable = r.code === 0 && r.stdout.toString() === `${token}\n`;
      } finally {
        await withDeadline('destroy', 30_000, () => vm.destroy()).catch(() => undefined);
      }
      process.stdout.write(`${JSON.stringify({ id: vm.id, usable, waitMs })}\n`);
    } catch (err) {
      process.stdout.write(
        `${JSON.stringify({ error: isVmcError(err) ? err.code : String(err), waitMs: performance.now() - t0 })}\n`,
      );
    }
  }),
);
await cache.close();
