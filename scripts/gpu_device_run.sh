#!/usr/bin/env bash
# Every GPU measurement in one call, for a lent GPU machine that has Python 3.12 + torch (CUDA) but no
# spaCy and no network (docs/gpu.md). Here, once:  bash ../shared/gpu/make_bundle.sh  (writes
# .gpu/bundle.tar.xz; keep /.gpu/ in .git/info/exclude). There: run this script from the checkout's root
# with the bundle carried along; results go to $OUT (default /tmp/gpu_out):
#   gpu.json (python -m spacy_softprompt bench gpu --workers 4 --large --frozen-backbone-dtype bfloat16 --frozen-checkpointing;
#   copy it to benchmarks/results/),
#   bench_gpu.log, gpu_tests.log (the opt-in GPU tests, when pytest is there), nvidia-smi.csv.
# BENCH_ARGS replaces the benchmark's options (default below: about 7 minutes on an H200 on 2026-12-04, before the overlapped pipe and the trained-heads agreement were added: ~1 more; BENCH_TIMEOUT 500 s and TESTS_TIMEOUT 60 s fit one 600-s device call).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT" /tmp/w
[ -d /tmp/w/site ] || tar -C /tmp/w -xJf .gpu/bundle.tar.xz || { echo "no .gpu/bundle.tar.xz: build it with ../shared/gpu/make_bundle.sh and carry .gpu" >&2; exit 2; }
# the checkout's package first (its benchmarks/ folder), the bundle's spaCy stack and entry points after it
export PYTHONPATH=$PWD:/tmp/w/site${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv" 2>&1 || true
read -r -a ARGS <<< "${BENCH_ARGS:---device cuda --gpu-id 0 --workers 4 --large --frozen-backbone-dtype bfloat16 --frozen-checkpointing}"
timeout "${BENCH_TIMEOUT:-500}" "$PY" -m spacy_softprompt bench gpu "${ARGS[@]}" --output "$OUT/gpu.json" > "$OUT/bench_gpu.log" 2>&1
echo "bench gpu: exit $?"
tail -40 "$OUT/bench_gpu.log"
if "$PY" -c "import pytest" 2>/dev/null; then
  SPACY_SOFTPROMPT_GPU_TESTS=1 timeout "${TESTS_TIMEOUT:-60}" "$PY" -m pytest -q -p no:cacheprovider \
    tests/test_gpu_pipeline.py tests/encoder/test_encoder_gpu.py > "$OUT/gpu_tests.log" 2>&1
  echo "gpu tests: exit $?"; tail -5 "$OUT/gpu_tests.log"
else
  echo "gpu tests: skipped (no pytest on this machine)" | tee "$OUT/gpu_tests.log"
fi
