#!/usr/bin/env bash
# Accuracy of the main job with other span windows: the main job (configs/tok_soft_cpu.cfg)
# trained with VARIANT's windows for STEPS steps, SEEDS seeds, evaluated on maccrobat2020 dev;
# compare with the stored main job of the same budget (windows 128 / stride 112):
#   python -m spacy_softprompt compare VARIANT files --vs benchmarks/results/main-600steps/soft-seed?.json
#   (STEPS=1600, the main job's schedule since 2026-12-03: --vs benchmarks/results/frozen/soft-seed?.json)
# VARIANT: stride128 (strided windows 128 / 128), sentences (spacy_softprompt.sentence_windows.v1,
# window 128), sentences256 (the same, window 256), or default (the main job's own windows 128 / 112: more seeds of the reference beside
# the stored three). Resumable: a seed whose metrics file exists is skipped, a killed seed goes on
# from its last dev evaluation (train --resume).
# STEPS (default 600, the main job's budget until 2026-12-03, which the stored window checks used):
# training steps, with the configs' early stopping; a value other than 600 tags the outputs
# <VARIANT>-steps<STEPS> (STEPS=1600 default made the main job's 1,600-step seeds, now stored as
# benchmarks/results/frozen/soft-seed*.json; docs/main-job.md).
# usage: [SEEDS="0 1 2"] [STEPS=600] scripts/window_check.sh stride128|sentences|sentences256|default
# outputs: benchmarks/results/<TAG>/soft-<TAG>-seed<S>.json and runs/…curve.json (TAG: VARIANT[-steps<STEPS>])
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
VARIANT=${1:?usage: scripts/window_check.sh stride128|sentences|sentences256|default}
TRAIN=${TRAIN:-corpus/maccrobat2020-maccrobat_medication-train.spacy}
DEV=${DEV:-corpus/maccrobat2020-maccrobat_medication-dev.spacy}
STEPS=${STEPS:-600}
TAG=$VARIANT
[ "$STEPS" != 600 ] && TAG="$VARIANT-steps$STEPS"
RESULTS=benchmarks/results/$TAG
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
  out="$RESULTS/soft-$TAG-seed$seed.json"
  if [ -f "$out" ]; then echo "== $TAG seed $seed: done ($out)"; continue; fi
  echo "== $TAG seed $seed: start $(date -u +%H:%M:%S)"
  $PYTHON -m spacy_softprompt train "$CONFIG" --output "training/windows/$TAG-seed$seed" --resume \
    --curve "$RESULTS/runs/soft-$TAG-seed$seed.curve.json" \
    --paths.train "$TRAIN" --paths.dev "$DEV" --system.seed "$seed" --training.max_steps "$STEPS" ${OVERRIDES[@]+"${OVERRIDES[@]}"}
  $PYTHON -m spacy_softprompt evaluate "training/windows/$TAG-seed$seed/model-best" "$DEV" --output "$out.partial"
  mv "$out.partial" "$out"
done
