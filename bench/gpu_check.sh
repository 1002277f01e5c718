#!/usr/bin/env bash
# Proves a Flywheel build on this machine (see bench/gpu_check.py for what it measures): the CUDA
# build on a GPU in under 8 minutes, or the CPU build with a tiny model in about 2 (for CI).
#
#   bench/gpu_check.sh [--device cuda|cpu] [--out DIR] [--bin PATH] [gpu_check.py options...]
#
# The binary: --bin, else $FLYWHEEL_BIN, else on cuda dist/flywheel-cuda-sm90 (or its .xz,
# decompressed into a temporary directory), on cpu ${CARGO_TARGET_DIR:-target}/release/flywheel.
# On cuda the CUDA 13 libraries (cudart, cublas, cublasLt, curand, nvrtc) are taken from the
# Python install's `nvidia` wheels (PyTorch cu13 has them). Results go to --out, else $OUT, else
# bench/gpu_check-out: gpu_check.json, gpu_check.md and a few logs.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
out="${OUT:-bench/gpu_check-out}"
bin="${FLYWHEEL_BIN:-}"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done
case "$device" in
  cuda|cpu) ;;
  *) echo "gpu_check: --device must be cuda or cpu, not '$device'" >&2; exit 64 ;;
esac

# The CUDA binary, decompressed if only the .xz is here (Python's own lzma: a GPU machine may lack
# the xz and zstd commands; the lent H200 did).
cuda_binary() {
  local plain="dist/flywheel-cuda-sm90" packed="dist/flywheel-cuda-sm90.xz"
  local unpacked="${TMPDIR:-/tmp}/gpu_check-flywheel-cuda-sm90"
  if [ -f "$plain" ]; then
    cp "$plain" "$unpacked"
  elif [ -f "$packed" ]; then
    python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst: shutil.copyfileobj(src, dst)' \
      "$packed" "$unpacked"
  else
    echo "gpu_check: no CUDA binary: pass --bin or FLYWHEEL_BIN, or build $plain(.xz) with" \
         "scripts/build-cuda.sh" >&2
    exit 66
  fi
  chmod +x "$unpacked"
  echo "$unpacked"
}

# The library folders of the `nvidia` wheels in this Python: nvidia/cu13/lib first, then the rest.
nvidia_library_path() {
  python3 - <<'EOF' 2>/dev/null || true
import os
try:
    import nvidia
except ImportError:
    raise SystemExit
cu13, others = [], []
for root in nvidia.__path__:
    for name in sorted(os.listdir(root)):
        lib = os.path.join(root, name, "lib")
        if os.path.isdir(lib):
            (cu13 if name == "cu13" else others).append(lib)
print(":".join(cu13 + others))
EOF
}

if [ -z "$bin" ]; then
  if [ "$device" = cuda ]; then
    bin="$(cuda_binary)"
  else
    bin="${CARGO_TARGET_DIR:-target}/release/flywheel"
  fi
fi
if [ ! -x "$bin" ]; then
  echo "gpu_check: $bin is not an executable flywheel binary" >&2
  exit 66
fi

if [ "$device" = cuda ]; then
  libs="$(nvidia_library_path)"
  # The driver's libcuda.so.1, where containers mount it, in case the loader's cache lacks it.
  for driver in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    [ -e "$driver/libcuda.so.1" ] && libs="${libs:+$libs:}$driver"
  done
  if [ -n "$libs" ]; then
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  missing="$(ldd "$bin" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ' || true)"
  if [ -n "$missing" ]; then
    echo "gpu_check: warning: $bin cannot find: $missing(LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})" >&2
  fi
fi

echo "gpu_check: device $device, binary $bin, results in $out"
exec python3 bench/gpu_check.py --device "$device" --bin "$bin" --out "$out" ${extra[@]+"${extra[@]}"}
