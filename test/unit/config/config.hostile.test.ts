import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfigText } from '../../../src/config/config.js';
import { isVmcError } from '../../../src/errors.js';

/** Inputs found by fuzzing `configuration.toml`: each must be reported (with file:line) or rejected, never crash. */
const parse = (text: string) => parseConfigText(text, 'c.toml', '/img');

const rejects = (text: string, re: RegExp) =>
  assert.throws(
    () => parse(text),
    (e) => isVmcError(e, 'VMC_ERR_CONFIG_INVALID') && re.test(e.message),
  );

const PROTOTYPE_NAMES = [
  '__proto__',
  'constructor',
  'toString',
  'hasOwnProperty',
  'valueOf',
  '__defineGetter__',
];

/** The one warning for a single unknown name. */
const unknown = (entry: string) => `c.toml: 1 name not acted on by vmcache, ignored; unknown: ${entry}`;

describe('configuration.toml against hostile input', () => {
  for (const name of PROTOTYPE_NAMES) {
    it(`reports a section or key named ${name} as unknown, with its line`, () => {
      assert.deepEqual(parse(`# c\n[${name}]\nx = 1\n`).warnings, [unknown(`[${name}] (line 2)`)]);
      assert.deepEqual(parse(`${name} = 1\n`).warnings, [unknown(`[${name}] (line 1)`)]);
      for (const section of ['factory', 'hypervisor.qemu', 'agent', 'agent.kata', 'runtime', 'cache']) {
        assert.deepEqual(parse(`[${section}]\n\n${name} = 1\n`).warnings, [
          unknown(`[${section}] ${name} (line 3)`),
        ]);
        assert.deepEqual(parse(`[${section}]\n"${name}" = { a = 1 }\n`).warnings, [
          unknown(`[${section}] ${name} (line 2)`),
        ]);
      }
      rejects(
        `[hypervisor.${name}]\npath = "/x"\n`,
        /c\.toml:1: .*is not supported \(only \[hypervisor.qemu\]\)/,
      );
    });
  }

  it('lets no such key change a value or a prototype', () => {
    const c = parse(
      '[factory]\n__proto__ = { vm_cache_number = 5 }\nconstructor = { vm_cache_number = 6 }\n',
    );
    assert.equal(c.factory.vmCacheNumber, 0);
    assert.equal(({} as Record<string, unknown>).vm_cache_number, undefined);
    assert.equal(Object.getPrototypeOf(c.factory), Object.prototype);
  });

  it('rejects a [hypervisor] that is not a table', () => {
    rejects('hypervisor = 1\n', /c\.toml:1: \[hypervisor\] must be a table/);
  });

  it('reports a 1 MiB key name with its line, shortened, instead of failing on a regular expression', () => {
    const key = 'k'.repeat(2 ** 20);
    const { warnings } = parse(`[factory]\n${key} = 1\n`);
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0]!,
      /^c\.toml: 1 name not acted on by vmcache, ignored; unknown: \[factory\] k{200}…\(1048576 characters\) \(line 2\)$/,
    );
    const section = parse(`\n["${'s'.repeat(2 ** 20)}"]\n`).warnings;
    assert.match(section[0]!, /; unknown: \[s{200}…\(1048576 characters\)\] \(line 2\)$/);
  });

  it('parses 8000 unknown keys in linear time and reports them in one warning', () => {
    const lines = Array.from({ length: 8000 }, (_, i) => `unknown_${i} = ${i}`);
    for (const text of [`[factory]\n${lines.join('\n')}\n`, `${lines.join('\n')}\n[factory]\n`]) {
      const started = performance.now();
      const { warnings } = parse(text);
      const ms = performance.now() - started;
      assert.ok(ms < 2000, `took ${Math.round(ms)} ms`);
      assert.equal(warnings.length, 1, warnings.slice(0, 3).join('\n'));
      assert.match(
        warnings[0]!,
        /^c\.toml: 8000 names not acted on by vmcache, ignored; unknown: (\[factory\] )?\[?unknown_0\]? \(line [12]\),/,
      );
      assert.match(warnings[0]!, /unknown_9\]? \(line 1[01]\) and 7990 more$/);
    }
  });

  it('quotes names that are not bare keys, so a newline in a key cannot fake a log line', () => {
    assert.deepEqual(parse('[factory]\n"a\\nb" = 1\n').warnings, [unknown('[factory] "a\\nb" (line 2)')]);
  });

  it('finds lines past multi-line strings and arrays, quoted headers and dotted keys', () => {
    const text = [
      'kernel_params = """', // 1: a top-level key: an unknown section
      '[factory]',
      "vm_cache_number = 'x'",
      '"""',
      '[ factory ]', // 5
      "note = '''",
      'vm_cache_number = 1',
      "'''",
      '"vm_cache_nmbr_x" = 2 # far from every key', // 9
      '[ "hypervisor" . \'qemu\' ]', // 10
      'arr = [',
      '  1, # ]',
      '  "]",',
      ']',
      'default_vcpus = "two"', // 15
    ].join('\n');
    rejects(text, /^c\.toml:15: \[hypervisor.qemu\] default_vcpus must be an integer/);
    assert.deepEqual(parse(text.replace('"two"', '2')).warnings, [
      'c.toml: 4 names not acted on by vmcache, ignored; unknown: [kernel_params] (line 1), ' +
        '[factory] note (line 6), vm_cache_nmbr_x (line 9), [hypervisor.qemu] arr (line 11)',
    ]);
    rejects('factory.vm_cache_number = "two"\n', /^c\.toml:1: \[factory\] vm_cache_number must be/);
    rejects(
      '[hypervisor]\n\nqemu = { default_vcpus = 65 }\n',
      /^c\.toml:3: \[hypervisor.qemu\] default_vcpus/,
    );
  });
});

describe('endpoint keys', () => {
  const long = `/${'a'.repeat(107)}`; // 108 bytes: one more than a Unix socket path holds

  it('rejects socket paths longer than 107 bytes at load, naming the key and line', () => {
    rejects(
      `[factory]\nvm_cache_endpoint = "${long}"\n`,
      /^c\.toml:2: \[factory\] vm_cache_endpoint must be a path of at most 107 bytes .*108/,
    );
    rejects(
      `\n[cache]\nmetrics_endpoint = "${long}"\n`,
      /^c\.toml:3: \[cache\] metrics_endpoint must be a path of at most 107/,
    );
    // Bytes, not characters: 54 two-byte characters are 108 bytes.
    rejects(`[factory]\nvm_cache_endpoint = "/${'é'.repeat(54)}"\n`, /at most 107 bytes/);
    const ok = long.slice(0, 107);
    assert.equal(parse(`[factory]\nvm_cache_endpoint = "${ok}"\n`).factory.vmCacheEndpoint, ok);
  });

  it('rejects metrics endpoints that are neither off, an absolute path nor a loopback port', () => {
    for (const bad of [
      'metrics.sock',
      '0.0.0.0:9100',
      'localhost',
      '127.0.0.1:0',
      '127.0.0.1:65536',
      '/run/',
    ]) {
      rejects(
        `[cache]\nmetrics_endpoint = ${JSON.stringify(bad)}\n`,
        /^c\.toml:2: \[cache\] metrics_endpoint must be/,
      );
    }
    rejects('[cache]\nmetrics_endpoint = "/run/a\\u0000b"\n', /without NUL/);
    for (const good of ['', '127.0.0.1:9100', 'localhost:1', '[::1]:65535', '/run/vmcache/metrics.sock']) {
      assert.equal(
        parse(`[cache]\nmetrics_endpoint = ${JSON.stringify(good)}\n`).cache.metricsEndpoint,
        good,
      );
    }
  });

  it('rejects a metrics endpoint equal to the cache endpoint', () => {
    rejects(
      '[factory]\nvm_cache_endpoint = "/run/x.sock"\n[cache]\nmetrics_endpoint = "/run/x.sock"\n',
      /^c\.toml:4: \[cache\] metrics_endpoint must differ from \[factory\] vm_cache_endpoint/,
    );
  });
});
