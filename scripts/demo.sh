#!/usr/bin/env bash
# The main job: set up what is missing, then boot a VM, run a command in it and print the timings.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure.sh
node dist/bundle/vmcache.mjs doctor || true
echo
echo "== cold boot + command: vmcache vm run --timings -- uname -a"
node dist/bundle/vmcache.mjs vm run --timings -- uname -a
