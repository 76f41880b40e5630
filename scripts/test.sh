#!/usr/bin/env bash
# The whole test suite: set up what is missing, then run unit and integration tests (real QEMU guests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure.sh
# The lint first: it fails on an import cycle (Biome's noImportCycles) and on what the style rules forbid.
npm run --silent lint
node --test --test-concurrency=1 --test-timeout=600000 dist/test/unit dist/test/integration
