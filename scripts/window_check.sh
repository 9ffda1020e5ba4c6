#!/usr/bin/env bash
# Accuracy of the main job with other span windows: the main job (configs/tok_soft_cpu.cfg,
# 600 steps) trained with VARIANT's windows, SEEDS seeds, evaluated on maccrobat2020 dev; compare
# with the stored main job (benchmarks/results/frozen/soft-seed*.json, windows 128 / stride 112):
#   python -m spacy_softprompt compare VARIANT files --vs benchmarks/results/frozen/soft-seed?.json
# VARIANT: stride128 (strided windows 128 / 128), sentences (spacy_softprompt.sentence_windows.v1,
# window 128), sentences256 (the same, window 256), or default (the main job's own windows 128 / 112: more seeds of the reference beside
# the stored three). Resumable: a seed whose metrics file exists is skipped.
# usage: [SEEDS="0 1 2"] scripts/window_check.sh stride128|sentences|sentences256|default
# outputs: benchmarks/results/<VARIANT>/soft-<VARIANT>-seed<S>.json and runs/…curve.json
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
VARIANT=${1:?usage: scripts/window_check.sh stride128|sentences|sentences256|default}
TRAIN=${TRAIN:-corpus/maccrobat2020-maccrobat_medication-train.spacy}
DEV=${DEV:-corpus/maccrobat2020-maccrobat_medication-dev.spacy}
RESULTS=benchmarks/results/$VARIANT
mkdir -p "$RESULTS/runs" training/windows
CONFIG=configs/tok_soft_cpu.cfg
OVERRIDES=()
case $VARIANT in
  default) ;;
  stride128) OVERRIDES=(--components.transformer.model.get_spans.stride 128) ;;
  sentences|sentences256)
    WINDOW=128; [ "$VARIANT" = sentences256 ] && WINDOW=256
    CONFIG=training/windows/tok_soft_${VARIANT}_cpu.cfg
    $PYTHON - "$CONFIG" "$WINDOW" <<'PY'
import sys
from spacy.util import load_config
cfg = load_config("configs/tok_soft_cpu.cfg")
cfg["components"]["transformer"]["model"]["get_spans"] = {"@span_getters": "spacy_softprompt.sentence_windows.v1", "window": int(sys.argv[2])}
cfg.to_disk(sys.argv[1])
PY
    ;;
  *) echo "unknown VARIANT $VARIANT (stride128 | sentences | sentences256 | default)" >&2; exit 2 ;;
esac
for seed in ${SEEDS:-0 1 2}; do
  out="$RESULTS/soft-$VARIANT-seed$seed.json"
  if [ -f "$out" ]; then echo "== $VARIANT seed $seed: done ($out)"; continue; fi
  echo "== $VARIANT seed $seed: start $(date -u +%H:%M:%S)"
  rm -rf "training/windows/$VARIANT-seed$seed"
  $PYTHON -m spacy_softprompt train "$CONFIG" --output "training/windows/$VARIANT-seed$seed" \
    --curve "$RESULTS/runs/soft-$VARIANT-seed$seed.curve.json" \
    --paths.train "$TRAIN" --paths.dev "$DEV" --system.seed "$seed" --training.max_steps 600 ${OVERRIDES[@]+"${OVERRIDES[@]}"}
  $PYTHON -m spacy_softprompt evaluate "training/windows/$VARIANT-seed$seed/model-best" "$DEV" --output "$out.partial"
  mv "$out.partial" "$out"
done
