// Build: type-check and emit with tsc (tests run on dist/), then bundle the CLI and the guest agent with
// esbuild (every OCI verb is a process, so CLI start-up matters), and copy the guest assets beside the bundle.
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, rmSync } from 'node:fs';
import { build } from 'esbuild';

const started = performance.now();
rmSync('dist', { recursive: true, force: true });
execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], {
  stdio: 'inherit',
});

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
};
await build({
  ...common,
  entryPoints: ['src/cli/main.ts'],
  outfile: 'dist/bundle/vmcache.mjs',
  // grpc-js, pino and prom-client are CommonJS: give the ESM bundle a require().
  banner: {
    js: "import { createRequire as __vmcCreateRequire } from 'node:module'; const require = __vmcCreateRequire(import.meta.url);",
  },
});
// The containerd shim v2: `start` runs for every task and must be quick, so each action is a chunk of its own
// (splitting), loaded only when that action runs; the daemon's chunk holds the sandbox layer and the factory.
await build({
  ...common,
  entryPoints: { 'containerd-shim-vmcache-v2': 'src/cli/shim-v2/main.ts' },
  outdir: 'dist/bundle/shim',
  outExtension: { '.js': '.mjs' },
  splitting: true,
  chunkNames: '[name]-[hash]',
  banner: {
    js: "import { createRequire as __vmcCreateRequire } from 'node:module'; const require = __vmcCreateRequire(import.meta.url);",
  },
});
await build({ ...common, entryPoints: ['src/guest/agent/main.ts'], outfile: 'dist/bundle/agent.mjs' });
mkdirSync('dist/bundle/guest-files', { recursive: true });
cpSync('src/guest/files', 'dist/bundle/guest-files', { recursive: true });
mkdirSync('dist/bundle/native', { recursive: true });
cpSync('src/platform/native', 'dist/bundle/native', { recursive: true });
console.error(`build: done in ${Math.round(performance.now() - started)} ms`);
