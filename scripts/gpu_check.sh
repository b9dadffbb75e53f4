#!/usr/bin/env bash
# The one GPU check: on one GPU, in under 8 minutes, a real-size Wan 2.1 1.3B with random weights in bf16
# under an NCCL process group (a world of one catches device errors): one stage-1, one stage-2 and one
# reward update at 832x480x49, and one-step generation at 1280x720x49 with the VAE and the fast decoder;
# seconds and peak memory per phase beside apt-estimate's figures, in one JSON (scripts/benchmark_gpu.py).
#
#   scripts/gpu_check.sh [OUT_DIR]            # on the GPU machine (default outputs/gpu-check)
#   scripts/gpu_check.sh --tiny OUT_DIR       # the same script on CPU at tiny widths (its test)
#   scripts/gpu_check.sh --download-wheels    # where a registry is reachable: diffusers and omegaconf wheels
#                                             # into gpu_wheels/, to carry to a GPU machine that has none
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WHEELS="$ROOT/gpu_wheels"
if [[ "${1:-}" == "--download-wheels" ]]; then
  pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
    -d "$WHEELS" diffusers omegaconf
  exit 0
fi
TINY=()
if [[ "${1:-}" == "--tiny" ]]; then TINY=(--tiny); shift; fi
OUT_DIR=${1:-${OUT:-outputs/gpu-check}}
mkdir -p "$OUT_DIR"
if ! python -c "import diffusers, omegaconf" 2>/dev/null; then
  [[ -d "$WHEELS" ]] || { echo "error: no diffusers/omegaconf here and no $WHEELS (scripts/gpu_check.sh --download-wheels)" >&2; exit 2; }
  pip install --no-index --no-deps "$WHEELS"/*.whl >"$OUT_DIR/pip.log" 2>&1  # omegaconf 2.4 needs only PyYAML
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if command -v nvidia-smi >/dev/null; then nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true; fi
start=$(date +%s)
timeout 480 python scripts/benchmark_gpu.py "${TINY[@]}" --repeats 2 --json "$OUT_DIR/gpu_check.json" \
  > "$OUT_DIR/gpu_check.log" 2>&1 || { tail -40 "$OUT_DIR/gpu_check.log" >&2; exit 1; }
echo "gpu check: $OUT_DIR/gpu_check.json ($(( $(date +%s) - start )) s)"
