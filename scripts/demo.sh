#!/usr/bin/env bash
# The main job: set up what is missing, then create sandboxes (OCI containers in VMs) cold and from the cache.
#   1. a busybox bundle (`vmcache spec` + Debian's busybox-static) is run with `vmcache run`, cold boot;
#   2. `vmcache factory init` keeps 2 VMs ready (a private config and socket, so nothing system-wide changes);
#   3. the same bundle is run twice more, each time in a VM from the cache; the times are printed side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure.sh
vmc() { node dist/bundle/vmcache.mjs "$@"; }
vmc doctor || true

dir=$(mktemp -d /tmp/vmc-demo-XXXXXX)
export VMCACHE_CONFIG="$dir/configuration.toml"
echo '[factory]
vm_cache_number = 0' > "$dir/cold.toml"
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

# A busybox bundle: `vmcache spec` writes runc's default config.json; the command is changed to a greeting.
bundle="$dir/bundle"
mkdir -p "$bundle/rootfs/bin"
cp /bin/busybox "$bundle/rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$bundle/rootfs/bin/$a"; done
vmc spec --bundle "$bundle"
node -e '
  const f = process.argv[1], c = JSON.parse(require("fs").readFileSync(f, "utf8"));
  c.process.args = ["sh", "-c", "echo \"hello from $(hostname), kernel $(uname -r)\""];
  require("fs").writeFileSync(f, JSON.stringify(c, null, 2));' "$bundle/config.json"
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
wait_pool() { # until the server has 2 ready VMs (at most 5 minutes)
  for _ in $(seq 1 600); do
    n=$( (vmc factory status --json 2>/dev/null || true) | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).vmstatus.length)}catch{console.log(0)}})' || true)
    [ "$n" = 2 ] && return 0
    sleep 0.5
  done
}

echo
echo "== 1. cold: vmcache run (a sandbox from the bundle, in a VM booted for it)"
t0=$(date +%s%N)
VMCACHE_CONFIG="$dir/cold.toml" vmc --root "$dir/root" run --bundle "$bundle" cold
cold=$(ms "$t0")
echo "   (cold: $cold ms end to end)"

echo
echo "== 2. vmcache factory init (vm_cache_number = 2), waiting until the pool is full"
vmc factory init > "$dir/server.log" 2>&1 &
server=$!
wait_pool
vmc factory status

echo
echo "== 3. from the cache: vmcache run, twice (each sandbox takes a ready VM)"
cached=()
for i in 1 2; do
  t0=$(date +%s%N)
  vmc --root "$dir/root" run --bundle "$bundle" "cached$i"
  cached+=("$(ms "$t0")")
  echo "   (cached$i: ${cached[-1]} ms end to end)"
  wait_pool # the server refills its pool (a cold boot in the background) before the next one
done
echo
echo "== 4. the VM alone, from the cache: vmcache vm run --verbose -- uname -a"
vmc vm run --verbose --timings -- uname -a

echo
vmc factory status
echo
echo "== summary: a sandbox (vmcache run of the busybox bundle), process start to exit"
echo "   cold boot:  ${cold} ms"
for i in "${!cached[@]}"; do echo "   from cache: ${cached[$i]} ms  ($(( cold / (cached[$i] > 0 ? cached[$i] : 1) ))x faster)"; done
