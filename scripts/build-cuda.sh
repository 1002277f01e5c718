#!/usr/bin/env bash
# Builds `flywheel --features cuda` on a machine with no GPU and no CUDA toolkit installed.
#
#   scripts/build-cuda.sh                    # Hopper (sm_90), CUDA 13.0, into dist/
#   CUDA_COMPUTE_CAP=89 scripts/build-cuda.sh
#   scripts/build-cuda.sh --toolkit-only    # only install the toolkit; print its root
#
# NVIDIA's compiler, headers and libraries come from their PyPI wheels (`nvidia-cuda-nvcc` and
# friends), cached under ~/.cache/flywheel/cuda-<version>. The versions are pinned to CUDA 13.0: the
# PTX that candle's kernels are built into is JIT-compiled by the driver, and a driver only reads PTX
# of its own CUDA version or older (driver 580 = CUDA 13.0). The one thing the wheels lack is the
# driver library `libcuda.so`, which only a GPU machine has; the linker gets a stub of it with the
# same symbols (made from cudarc's bindings), and the real one is found at run time.
#
# Output: dist/flywheel-cuda-sm<cap> (stripped) and dist/flywheel-cuda-sm<cap>.xz, 23 MB, which is
# what travels to a GPU machine (Python's own lzma unpacks it there). At run time the binary needs
# the driver and the CUDA 13 libraries cudart, cublas, cublasLt, curand and nvrtc (the `nvidia-*`
# wheels, a PyTorch cu13 install or the nvidia/cuda runtime image all have them).
# A cold build takes about 25 minutes on 2 cores (23 measured); see bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cap="${CUDA_COMPUTE_CAP:-90}"
cache="${FLYWHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flywheel}"
cuda="$cache/cuda-13.0"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_CUDA:-$cache/target-cuda}"

wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)

if [ ! -e "$cuda/.complete" ]; then
  echo "== CUDA 13.0 toolkit from PyPI into $cuda"
  rm -rf "$cuda"
  python3 -m pip install -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --target "$cuda/wheels" "${wheels[@]}"
  root="$cuda/wheels/nvidia/cu13"
  # The shape of a toolkit install: lib64, unversioned .so names for the linker.
  ln -sfn lib "$root/lib64"
  for lib in "$root"/lib/lib*.so.*; do
    name="$(basename "$lib")"
    ln -sfn "$name" "$root/lib/${name%%.so.*}.so"
  done
  # The driver API stub: every cu* function cudarc's bindings declare, as an empty symbol.
  mkdir -p "$root/lib/stubs"
  registry="$(cargo metadata --format-version 1 --manifest-path server/Cargo.toml --features cuda \
    | python3 -c 'import json,sys; print("\n".join(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"))')"
  for manifest in $registry; do
    grep -ho 'pub unsafe fn cu[A-Za-z0-9_]*(' "$(dirname "$manifest")/src/driver/sys/mod.rs"
  done | sed 's/pub unsafe fn \(.*\)(/\1/' | sort -u | sed 's/.*/void &(void) {}/' >"$root/lib/stubs/cuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$root/lib/stubs/cuda_stub.c"
  ln -sfn "$root" "$cuda/home"
  touch "$cuda/.complete"
fi

home="$cuda/home"
if [ "${1:-}" = "--toolkit-only" ]; then
  echo "$home"
  exit 0
fi
export CUDA_HOME="$home" CUDA_ROOT="$home" CUDA_PATH="$home" CUDA_TOOLKIT_ROOT_DIR="$home"
export PATH="$home/bin:$PATH"
export LIBRARY_PATH="$home/lib:$home/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="$cap"
nvcc --version | tail -n 2

echo "== cargo build --release --features cuda (sm_$cap) into $CARGO_TARGET_DIR"
started=$(date +%s)
cargo build --release --locked --features cuda --bin flywheel
echo "built in $(( $(date +%s) - started )) s"

mkdir -p dist
out="dist/flywheel-cuda-sm$cap"
cp "$CARGO_TARGET_DIR/release/flywheel" "$out"
strip "$out"
xz -6 -T0 -f -k "$out"
ls -l "$out" "$out.xz"
