import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfigText } from '../../../src/config/config.js';
import { poolTemplatePaths } from '../../../src/config/pools.js';
import { isVmcError } from '../../../src/errors.js';

const FILE = '/etc/vmcache/configuration.toml';
const HOST = { cpus: 8, memoryMiB: 16384 };
const parse = (text: string) => parseConfigText(text, FILE, '/img', HOST);

const HEAD = `
[hypervisor.qemu]
default_vcpus = 1
default_memory = 512
default_maxvcpus = 4
default_maxmemory = 4096

[factory]
vm_cache_number = 2
`;

describe('[[cache.pool]]: pools per VM shape', () => {
  it('without pools: one fixed pool of the [hypervisor.qemu] shape, sized by vm_cache_number (Kata)', () => {
    const c = parse(HEAD);
    assert.deepEqual(c.cache.pools, [
      { name: 'default', cpus: 1, memoryMiB: 512, min: 2, max: 2, template: false },
    ]);
    assert.equal(c.cache.memoryBudgetMiB, 0);
  });

  it('no cache (vm_cache_number 0) and no pools: no pool at all', () => {
    assert.deepEqual(parse('[factory]\nvm_cache_number = 0\n').cache.pools, []);
  });

  it('listed pools come after the default one; defaults: name <vcpus>x<memory>, max = min, template from [factory]', () => {
    const c = parse(`${HEAD}enable_template = true

[cache]
memory_budget = 8192

[[cache.pool]]
vcpus = 2
memory = 1024
min = 1
max = 4

[[cache.pool]]
name = "big"
vcpus = 4
memory = 2048
min = 1
template = false
`);
    assert.deepEqual(c.cache.pools, [
      { name: 'default', cpus: 1, memoryMiB: 512, min: 2, max: 2, template: true },
      { name: '2x1024', cpus: 2, memoryMiB: 1024, min: 1, max: 4, template: true },
      { name: 'big', cpus: 4, memoryMiB: 2048, min: 1, max: 1, template: false },
    ]);
    assert.equal(c.cache.memoryBudgetMiB, 8192);
    assert.ok(Object.isFrozen(c.cache.pools[1]));
  });

  it('a listed pool of the default shape replaces the implicit one (its min and max size it), first', () => {
    const c = parse(`${HEAD}
[[cache.pool]]
vcpus = 2
memory = 1024
max = 2

[[cache.pool]]
name = "small"
vcpus = 1
memory = 512
min = 0
max = 6
`);
    assert.deepEqual(
      c.cache.pools.map((p) => [p.name, p.cpus, p.memoryMiB, p.min, p.max]),
      [
        ['small', 1, 512, 0, 6],
        ['2x1024', 2, 1024, 0, 2],
      ],
    );
  });

  const bad: Array<[string, string, RegExp]> = [
    [
      'an unknown key',
      `[[cache.pool]]\nvcpus = 1\nmemory = 256\nmax = 1\nvcpu = 2\n`,
      /:15: \[\[cache\.pool\]\] #1 vcpu: unknown key; a pool has name, vcpus, memory, min, max, template/,
    ],
    ['no vcpus', `[[cache.pool]]\nmemory = 256\nmax = 1\n`, /\[\[cache\.pool\]\] #1: vcpus is required/],
    [
      'max below min',
      `[[cache.pool]]\nvcpus = 1\nmemory = 256\nmin = 3\nmax = 2\n`,
      /:15: \[\[cache\.pool\]\] #1 max \(2\) must be at least min \(3\)/,
    ],
    ['max 0', `[[cache.pool]]\nvcpus = 1\nmemory = 256\n`, /#1 max is 0: a pool that may never keep a VM/],
    [
      'the same shape twice (line of the second)',
      `[[cache.pool]]\nvcpus = 2\nmemory = 256\nmax = 1\n\n[[cache.pool]]\nname = "again"\nvcpus = 2\nmemory = 256\nmax = 1\n`,
      /:16: \[\[cache\.pool\]\] #2: shape 2 vCPU\/256 MiB is also pool #1's \(one pool per shape\)/,
    ],
    [
      'the same name twice',
      `[[cache.pool]]\nname = "a"\nvcpus = 2\nmemory = 256\nmax = 1\n[[cache.pool]]\nname = "a"\nvcpus = 3\nmemory = 256\nmax = 1\n`,
      /#2 name: pool name a is also pool #1's/,
    ],
    [
      'a bad name',
      `[[cache.pool]]\nname = "Big Pool"\nvcpus = 2\nmemory = 256\nmax = 1\n`,
      /#1 name must be up to 32 lower-case letters/,
    ],
    [
      'a wrong type',
      `[[cache.pool]]\nvcpus = "2"\nmemory = 256\nmax = 1\n`,
      /#1 vcpus must be an integer from 1 to 64/,
    ],
    [
      'vcpus above default_maxvcpus',
      `[[cache.pool]]\nvcpus = 8\nmemory = 256\nmax = 1\n`,
      /#1 vcpus \(8\) is above \[hypervisor\.qemu\] default_maxvcpus \(4\)/,
    ],
    [
      'memory above default_maxmemory',
      `[[cache.pool]]\nvcpus = 1\nmemory = 8192\nmax = 1\n`,
      /#1 memory \(8192\) is above \[hypervisor\.qemu\] default_maxmemory \(4096 MiB\)/,
    ],
    [
      '[cache] pool as a plain table',
      `[cache.pool]\nvcpus = 1\n`,
      /\[\[cache\.pool\]\] #1 must be written as \[\[cache\.pool\]\] tables/,
    ],
    [
      'minimums over the budget',
      `[cache]\nmemory_budget = 1024\n[[cache.pool]]\nvcpus = 2\nmemory = 512\nmin = 1\nmax = 1\n`,
      /\[cache\] memory_budget \(1024 MiB\) is below what the pools' minimums keep \(1536 MiB: default 2×512, 2x512 1×512\)/,
    ],
  ];
  for (const [what, pools, message] of bad) {
    it(`refuses ${what}, naming the pool and key`, () => {
      assert.throws(
        () => parse(`${HEAD}\n${pools}`),
        (e) => isVmcError(e, 'VMC_ERR_CONFIG_INVALID') && message.test(e.message),
      );
    });
  }

  it("each pool of template clones has its template: the default pool's at template_path, another's beside it", () => {
    const c = parse(`${HEAD}
template_path = "/run/vmcache/tpl"

[[cache.pool]]
name = "big"
vcpus = 2
memory = 1024
max = 1
template = true

[[cache.pool]]
name = "direct"
vcpus = 3
memory = 1024
max = 1
`);
    assert.deepEqual(poolTemplatePaths(c.cache.pools, c.factory.templatePath), [
      null,
      '/run/vmcache/tpl-big',
      null,
    ]);
    const t = parse(`${HEAD}enable_template = true\ntemplate_path = "/run/vmcache/tpl"\n`);
    assert.deepEqual(poolTemplatePaths(t.cache.pools, t.factory.templatePath), ['/run/vmcache/tpl']);
  });

  it('refuses pools when vm_cache_number is 0 (the cache is off)', () => {
    assert.throws(
      () => parse(`[factory]\nvm_cache_number = 0\n[[cache.pool]]\nvcpus = 1\nmemory = 256\nmax = 1\n`),
      (e) =>
        isVmcError(e, 'VMC_ERR_CONFIG_INVALID') &&
        /pools are listed but .*\[factory\] vm_cache_number is 0/.test(e.message),
    );
  });
});
