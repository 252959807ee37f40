#!/usr/bin/env bash
# Installs every Debian package that dtrain's build, tests and benchmarks need. Idempotent:
# packages already present are left alone, and apt-get update runs only when something is missing.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates
  clang libclang-rt-dev clang-format   # the clang and libFuzzer builds, sanitizers, the format check
  libyaml-dev libzstd-dev zstd libxxhash-dev libopenblas-dev
  openmpi-bin libopenmpi-dev
  slurm-wlm munge
  iproute2 iperf3 procps psmisc
  python3 python3-torch            # torchrun anchor, env:// test, PyTorch reference model
  gnuplot-nox                      # the trainer's loss-curve PNG
  redis-server redis-tools         # store benchmark anchor
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian starts these daemons on install; our tests and benchmarks start their own instances.
for svc in redis-server slurmctld slurmd munge; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
echo "install-deps: done"
