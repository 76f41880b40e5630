import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { status as Code, Server, ServerCredentials, type sendUnaryData } from '@grpc/grpc-js';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { type ErrorCode, isVmcError, VmcError } from '../../../src/errors.js';
import { encodeConfig, toGrpcError } from '../../../src/factory/cache-wire.js';
import { RemoteCacheFactory } from '../../../src/factory/remote-cache.js';
import { type Clock, systemClock } from '../../../src/platform/clock.js';
import { runCommand } from '../../../src/platform/command.js';
import { nullLogger } from '../../../src/platform/logger.js';
import { CacheServiceService } from '../../../src/protocol/cache/generated/cache.js';

/** Socket paths must stay under 107 bytes: a short directory under the system temp directory. */
const dir = mkdtempSync(join(tmpdir(), 'vmc-rc-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

const spec = defaultVmSpec('/img', 'tcg');
const deps = (clock: Clock = systemClock) => ({
  paths: { runDir: dir, imageDir: '/img', cacheDir: dir },
  clock,
  logger: nullLogger,
  run: runCommand,
});

/** A CacheService whose Config answers with `config` (a reply or an error to send), on its own socket. */
async function peer(
  config: () => { reply?: unknown; err?: unknown },
): Promise<{ endpoint: string; stop(): void }> {
  const server = new Server();
  const impl = {
    config: (_call: unknown, cb: sendUnaryData<unknown>) => {
      const a = config();
      if (a.err) cb(toGrpcError(a.err));
      else cb(null, a.reply);
    },
  };
  server.addService(CacheServiceService, impl);
  const endpoint = join(dir, `s${++n}.sock`);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${endpoint}`, ServerCredentials.createInsecure(), (e) =>
      e ? reject(e) : resolve(),
    ),
  );
  return { endpoint, stop: () => server.forceShutdown() };
}

describe('RemoteCacheFactory (the client side of the wire)', () => {
  it("takes the server's spec from Config", async () => {
    const p = await peer(() => ({ reply: encodeConfig(spec, { dialTimeoutMs: 1 }) }));
    try {
      const remote = await RemoteCacheFactory.connect(p.endpoint, deps());
      assert.deepEqual(remote.config(), spec);
      await remote.close();
    } finally {
      p.stop();
    }
  });

  it("raises the server's own error code, sent in vmcache-error-code", async () => {
    for (const code of ['VMC_ERR_CACHE_CLOSED', 'VMC_ERR_VM_DEAD', 'VMC_ERR_CACHE_TIMEOUT'] as ErrorCode[]) {
      const p = await peer(() => ({ err: new VmcError(code, 'as the server says') }));
      try {
        await assert.rejects(
          RemoteCacheFactory.connect(p.endpoint, deps()),
          (e) => isVmcError(e, code) && /cache Config: as the server says/.test(e.message),
        );
      } finally {
        p.stop();
      }
    }
  });

  it('refuses a Config whose Data is not a VM spec, naming the field', async () => {
    const p = await peer(() => ({
      reply: { Data: Buffer.from(JSON.stringify({ ...spec, memoryMiB: -1 })), AgentConfig: Buffer.alloc(0) },
    }));
    try {
      await assert.rejects(
        RemoteCacheFactory.connect(p.endpoint, deps()),
        (e) => isVmcError(e, 'VMC_ERR_CACHE_PROTOCOL') && /Data\.memoryMiB/.test(e.message),
      );
    } finally {
      p.stop();
    }
  });

  it('measures its deadlines on the injected clock', async () => {
    const p = await peer(() => ({ reply: encodeConfig(spec, { dialTimeoutMs: 1 }) }));
    try {
      // A clock an hour behind: every deadline computed from it has passed already, so grpc-js gives up at once.
      const behind: Clock = { ...systemClock, now: () => Date.now() - 3_600_000 };
      await assert.rejects(RemoteCacheFactory.connect(p.endpoint, deps(behind)), (e) =>
        isVmcError(e, 'VMC_ERR_CACHE_TIMEOUT'),
      );
    } finally {
      p.stop();
    }
  });

  it('says how to start a server when none answers', async () => {
    await assert.rejects(
      RemoteCacheFactory.connect(join(dir, 'nobody.sock'), deps()),
      (e) =>
        isVmcError(e, 'VMC_ERR_CACHE_UNAVAILABLE') &&
        /vmcache factory init/.test(e.message) &&
        (e.cause as VmcError).details.grpcCode === Code.UNAVAILABLE,
    );
  });
});
