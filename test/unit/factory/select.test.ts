import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Server, ServerCredentials, type sendUnaryData, status } from '@grpc/grpc-js';
import { parseConfigText } from '../../../src/config/config.js';
import { defaultVmSpec } from '../../../src/config/defaults.js';
import { isVmcError } from '../../../src/errors.js';
import { selectFactory } from '../../../src/factory/select.js';
import { templateFiles } from '../../../src/factory/template.js';
import { systemClock } from '../../../src/platform/clock.js';
import type { Logger } from '../../../src/platform/logger.js';
import { identify } from '../../../src/platform/process.js';
import { CacheServiceService, type GrpcVMConfig } from '../../../src/protocol/cache/generated/cache.js';
import type { VmDeps } from '../../../src/vm/vm.js';

const root = mkdtempSync(join(tmpdir(), 'vmc-select-'));
after(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => join(root, `${name}${n++}`);

const spec = defaultVmSpec('/img', 'tcg');

/** A configuration from TOML `[factory]` lines, as a client reads it. */
const config = (factory: string) => parseConfigText(`[factory]\n${factory}\n`, 'test.toml', '/img');

function deps() {
  const warnings: Array<Record<string, unknown>> = [];
  const logger: Logger = {
    debug() {},
    info() {},
    warn: (obj) => warnings.push(obj),
    error() {},
    child: () => logger,
  };
  const d: VmDeps = {
    paths: { runDir: fresh('run'), imageDir: '/img', cacheDir: '/cache' },
    // Real sockets and gRPC deadlines (absolute wall-clock times): the real clock.
    clock: systemClock,
    logger,
    run: async () => assert.fail('selecting a factory runs no host commands'),
  };
  return { deps: d, warnings };
}

/** A cache server that only answers Config: with `served` as its base spec, or with a gRPC error. */
async function fakeCacheServer(served: object | { error: status }): Promise<{ path: string; stop(): void }> {
  const path = fresh('cache.sock');
  const server = new Server();
  server.addService(CacheServiceService, {
    config: (_call: unknown, cb: sendUnaryData<GrpcVMConfig>) => {
      if ('error' in served) return cb({ code: served.error, details: 'broken' }, null);
      cb(null, { Data: Buffer.from(JSON.stringify(served)), AgentConfig: Buffer.alloc(0) });
    },
  });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${path}`, ServerCredentials.createInsecure(), (e) =>
      e ? reject(e) : resolve(),
    ),
  );
  return { path, stop: () => server.forceShutdown() };
}

/** Writes a template directory whose files match its template.json. */
function fakeTemplate(dir: string, made: object, version = 2) {
  const f = templateFiles(dir);
  mkdirSync(dir, { recursive: true });
  writeFileSync(f.memory, Buffer.alloc(4096));
  writeFileSync(f.state, Buffer.alloc(100));
  writeFileSync(
    f.meta,
    JSON.stringify({ version, createdAt: 1, spec: made, memoryBytes: 4096, stateBytes: 100 }),
  );
}

describe('selectFactory (which base a client uses)', () => {
  it('boots directly when no cache or template is configured, or when told not to use them', async () => {
    const { deps: d, warnings } = deps();
    const none = await selectFactory(config(''), spec, d, true);
    assert.equal(none.kind, 'direct');
    assert.equal(none.factory.config(), spec);
    const missing = fresh('nobody.sock');
    const off = await selectFactory(
      config(`vm_cache_number = 1\nvm_cache_endpoint = "${missing}"\nenable_template = true`),
      spec,
      d,
      false,
    );
    assert.equal(off.kind, 'direct');
    assert.deepEqual(warnings, [], 'useCache: false is no fallback: nothing to warn about');
  });

  it("uses the cache server when one answers, with the server's base spec", async () => {
    const served = { ...spec, kernel: '/server/vmlinux' };
    const server = await fakeCacheServer(served);
    try {
      const { deps: d, warnings } = deps();
      const got = await selectFactory(
        config(`vm_cache_number = 1\nvm_cache_endpoint = "${server.path}"`),
        spec,
        d,
        true,
      );
      assert.equal(got.kind, 'cache');
      assert.deepEqual(got.factory.config(), served);
      assert.deepEqual(warnings, []);
      await got.factory.close();
    } finally {
      server.stop();
    }
  });

  it('warns naming the endpoint and boots directly when no cache server answers, even with a template', async () => {
    const { deps: d, warnings } = deps();
    const endpoint = fresh('nobody.sock');
    const templatePath = fresh('template');
    fakeTemplate(templatePath, spec);
    const got = await selectFactory(
      config(
        `vm_cache_number = 1\nvm_cache_endpoint = "${endpoint}"\nenable_template = true\ntemplate_path = "${templatePath}"`,
      ),
      spec,
      d,
      true,
    );
    assert.equal(got.kind, 'direct');
    assert.deepEqual(warnings, [{ endpoint }]);
  });

  it('under miss policy fail, an unreachable cache server is an error, not a cold boot', async () => {
    const { deps: d, warnings } = deps();
    const endpoint = fresh('nobody.sock');
    await assert.rejects(
      selectFactory(config(`vm_cache_number = 1\nvm_cache_endpoint = "${endpoint}"`), spec, d, true, {
        missPolicy: 'fail',
      }),
      (e) => isVmcError(e, 'VMC_ERR_CACHE_UNAVAILABLE'),
    );
    assert.deepEqual(warnings, []);
    for (const missPolicy of ['wait', 'cold'] as const) {
      const got = await selectFactory(
        config(`vm_cache_number = 1\nvm_cache_endpoint = "${endpoint}"`),
        spec,
        d,
        true,
        { missPolicy },
      );
      assert.equal(got.kind, 'direct', `${missPolicy}: falls back as before`);
    }
  });

  it('does not hide a cache server that answers with an error', async () => {
    const server = await fakeCacheServer({ error: status.INTERNAL });
    try {
      const { deps: d } = deps();
      await assert.rejects(
        selectFactory(config(`vm_cache_number = 1\nvm_cache_endpoint = "${server.path}"`), spec, d, true),
        (e) => isVmcError(e, 'VMC_ERR_CACHE_PROTOCOL') && /broken/.test(e.message),
      );
    } finally {
      server.stop();
    }
  });

  it("clones the template when one exists, with the template's own spec", async () => {
    const { deps: d, warnings } = deps();
    const templatePath = fresh('template');
    const made = { ...spec, memoryMiB: 1024 };
    fakeTemplate(templatePath, made);
    const got = await selectFactory(
      config(`enable_template = true\ntemplate_path = "${templatePath}"`),
      spec,
      d,
      true,
    );
    assert.equal(got.kind, 'template');
    assert.deepEqual(got.factory.config(), made);
    assert.deepEqual(warnings, []);
  });

  it('waits while another process creates the template on first use, then clones the one it made', async () => {
    const { deps: d, warnings } = deps();
    const templatePath = fresh('template');
    // A live process (this one) holds the creation lock and has begun: the memory file is there, the rest
    // not yet. selectFactory must wait, neither create a second one nor call this one damaged.
    writeFileSync(`${templatePath}.lock`, JSON.stringify(identify(process.pid)));
    mkdirSync(templatePath, { recursive: true });
    writeFileSync(templateFiles(templatePath).memory, Buffer.alloc(4096));
    const got = selectFactory(
      config(`enable_template = true\ntemplate_path = "${templatePath}"`),
      spec,
      d,
      true,
    );
    await new Promise((r) => setTimeout(r, 500));
    const made = { ...spec, kernel: '/made/by/the/other' };
    fakeTemplate(templatePath, made);
    rmSync(`${templatePath}.lock`);
    const r = await got;
    assert.equal(r.kind, 'template');
    assert.deepEqual(r.factory.config(), made);
    assert.deepEqual(warnings, [], 'nothing created here');
  });

  it('does not hide a damaged template', async () => {
    const { deps: d } = deps();
    const templatePath = fresh('template');
    fakeTemplate(templatePath, spec);
    writeFileSync(templateFiles(templatePath).state, 'truncated');
    await assert.rejects(
      selectFactory(config(`enable_template = true\ntemplate_path = "${templatePath}"`), spec, d, true),
      (e) => isVmcError(e, 'VMC_ERR_TEMPLATE_DAMAGED'),
    );
  });

  it('refuses a template made before VMs had a spare NIC (its clones would not load), saying how to recreate it', async () => {
    const { deps: d } = deps();
    const templatePath = fresh('template');
    fakeTemplate(templatePath, spec, 1);
    await assert.rejects(
      selectFactory(config(`enable_template = true\ntemplate_path = "${templatePath}"`), spec, d, true),
      (e) =>
        isVmcError(e, 'VMC_ERR_TEMPLATE_DAMAGED') &&
        /older vmcache, whose VMs had no spare NIC.*factory destroy/.test((e as Error).message),
    );
  });
});
