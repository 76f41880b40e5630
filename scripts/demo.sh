#!/usr/bin/env bash
# The main job: set up what is missing, then show cold boots against VMs from the cache.
#   1. a cold `vmcache vm run`;
#   2. `vmcache factory init` keeps 2 VMs ready (a private config and socket, so nothing system-wide changes);
#   3. `vmcache vm run` takes its VM from the cache; the timings are printed side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure.sh
vmc() { node dist/bundle/vmcache.mjs "$@"; }
vmc doctor || true

dir=$(mktemp -d /tmp/vmc-demo-XXXXXX)
export VMCACHE_CONFIG="$dir/configuration.toml"
cat > "$VMCACHE_CONFIG" <<TOML
[factory]
vm_cache_number = 2
vm_cache_endpoint = "$dir/cache.sock"
TOML
server=""
cleanup() {
  [ -n "$server" ] && vmc factory destroy >/dev/null 2>&1 || true
  [ -n "$server" ] && wait "$server" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

ready_ms() { sed -n 's/^timings: vm ready \([0-9]*\) ms.*/\1/p' "$1"; }

echo
echo "== 1. cold boot: vmcache vm run --no-cache -- uname -a"
vmc vm run --no-cache --verbose --timings -- uname -a 2> >(tee "$dir/cold.txt" >&2)
cold=$(ready_ms "$dir/cold.txt")

echo
echo "== 2. vmcache factory init (vm_cache_number = 2), waiting until the pool is full"
vmc factory init > "$dir/server.log" 2>&1 &
server=$!
for _ in $(seq 1 600); do
  n=$( (vmc factory status --json 2>/dev/null || true) | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).vmstatus.length)}catch{console.log(0)}})' || true)
  [ "$n" = 2 ] && break
  sleep 0.5
done
vmc factory status

echo
echo "== 3. from the cache: vmcache vm run -- uname -a (twice)"
cached=()
for i in 1 2; do
  vmc vm run --verbose --timings -- uname -a 2> >(tee "$dir/cached$i.txt" >&2)
  sleep 0.2
  cached+=("$(ready_ms "$dir/cached$i.txt")")
done

echo
vmc factory status
echo
echo "== summary: time until the VM is ready for the command"
echo "   cold boot:  ${cold} ms"
for i in "${!cached[@]}"; do echo "   from cache: ${cached[$i]} ms  ($(( cold / (cached[$i] > 0 ? cached[$i] : 1) ))x faster)"; done
