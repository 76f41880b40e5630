#!/usr/bin/env bash
# Installs whatever is missing for vmcache on a Debian 12 machine with Node 20, and nothing more:
# apt packages, npm dependencies, the build, the guest image. Fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Debian packages the build and the tests need; containerd, podman, runc and crun are the clients and
# baselines the runtime tests and the bench drive; python3 drives a pty in the terminal tests.
pkgs=(qemu-system-x86 busybox-static cpio e2fsprogs xz-utils kmod gcc libc6-dev iproute2 procps
  containerd containernetworking-plugins runc crun podman conmon python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
apt_updated=0
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  apt_updated=1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The image builder asks apt which kernel package is current; that needs package lists.
if [ "$apt_updated" -eq 0 ] && ! apt-cache depends linux-image-amd64 2>/dev/null | grep -q 'Depends: linux-image-[0-9]'; then
  echo "setup: refreshing apt package lists" >&2
  $SUDO apt-get update -qq
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ -n "$(find src test bench reliability scripts package.json tsconfig.json -newer "$stamp" -print -quit)" ]; then
  echo "setup: building" >&2
  npm run --silent build
  touch "$stamp"
fi

node dist/bundle/vmcache.mjs image build
