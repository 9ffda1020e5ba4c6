#!/usr/bin/env bash
# The frozen-backbone table: soft-frozen (P = 5), soft-frozen at P = 20 and soft-lora (configs' own
# recipes), the PEFT peers (prefix tuning, LoRA; benchmarks/baseline_peft.py) and the unfrozen main job (soft, its config's
# schedule: up to 1,600 steps, early stopping),
# SEEDS seeds each, on MACCROBAT train/dev with MiniLM; then mean ± sd and paired bootstrap
# intervals (python -m spacy_softprompt compare) against soft-frozen.
#
# Resumable: a run whose metrics file exists is skipped, so rerunning after a kill goes on where it
# stopped (a killed run of ours goes on from its last dev evaluation: `train --resume`; a PEFT peer
# restarts from its beginning). Runs one after the other, at the priority the
# caller gives (e.g. `nice -n 19`).
# usage: [SEEDS="0 1 2"] [SYSTEMS="soft-frozen peft-prefix7 soft-frozen-p20 peft-prefix22 soft-lora peft-lora soft"] [PEFT_ARGS="..."] scripts/frozen_table.sh
# peft-prefix<N>: prefix tuning with N virtual tokens (peft-prefix: 20; peft-prefix7: 7, the
# smallest prefix that trains at least as many parameters as soft-frozen's entity path at P = 5;
# peft-prefix22: the same for P = 20).
# <strategy>-p<N>: configs/tok_<strategy>_cpu.cfg with prompt_length N (soft-frozen-p20: P = 20,
# the shipped length until 2026-12-05). PEFT_ARGS
# go to benchmarks/baseline_peft.py; the stored 20-token prefix runs (seeds 0, 1) were made with
# SEEDS="0 1" SYSTEMS=peft-prefix PEFT_ARGS="--patience 5". The table covers every system stored.
# outputs: trained pipelines in training/frozen/<system>-seed<S>/ (not kept); per run, in
# benchmarks/results/frozen/: <system>-seed<S>.json (dev metrics with per-document counts) and
# runs/<system>-seed<S>.json (trainable / total parameters, wall seconds; PEFT: the baseline's report,
# with its per-epoch dev scores) and, for our pipelines, runs/<system>-seed<S>.curve.json (the dev curve).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
TRAIN=${TRAIN:-corpus/maccrobat2020-maccrobat_medication-train.spacy}
DEV=${DEV:-corpus/maccrobat2020-maccrobat_medication-dev.spacy}
SYSTEMS=${SYSTEMS:-soft-frozen peft-prefix7 soft-frozen-p20 peft-prefix22 soft-lora peft-lora soft}
read -r -a PEFT_EXTRA <<< "${PEFT_ARGS:-}"
RESULTS=${RESULTS:-benchmarks/results/frozen}
mkdir -p "$RESULTS/runs" training/frozen

run_one() {  # run_one SYSTEM SEED
  local system=$1 seed=$2 out="$RESULTS/$1-seed$2.json"
  if [ -f "$out" ]; then echo "== $system seed $seed: done ($out)"; return; fi
  echo "== $system seed $seed: start $(date -u +%H:%M:%S)"
  local start=$SECONDS
  case $system in
    peft-*)
      local method=${system#peft-} extra=()
      if [[ $method =~ ^prefix([0-9]+)$ ]]; then extra=(--virtual-tokens "${BASH_REMATCH[1]}"); method=prefix; fi
      $PYTHON benchmarks/baseline_peft.py --method "$method" "${extra[@]}" "${PEFT_EXTRA[@]}" --seed "$seed" --train "$TRAIN" --dev "$DEV" \
        --output "$RESULTS/runs/$system-seed$seed.json" --metrics-output "$out.partial"
      ;;
    *)
      local strategy=$system shape=()
      if [[ $system =~ ^(.+)-p([0-9]+)$ ]]; then
        strategy=${BASH_REMATCH[1]}; shape=(--components.transformer.model.prompt_length "${BASH_REMATCH[2]}")
      fi
      $PYTHON -m spacy_softprompt train "configs/tok_${strategy}_cpu.cfg" --output "training/frozen/$system-seed$seed" --resume \
        --curve "$RESULTS/runs/$system-seed$seed.curve.json" \
        --paths.train "$TRAIN" --paths.dev "$DEV" --system.seed "$seed" ${shape[@]+"${shape[@]}"}
      $PYTHON -m spacy_softprompt evaluate "training/frozen/$system-seed$seed/model-best" "$DEV" --output "$out.partial"
      $PYTHON scripts/frozen_report.py --run-info "training/frozen/$system-seed$seed/model-best" \
        --wall-s $((SECONDS - start)) > "$RESULTS/runs/$system-seed$seed.json"
      ;;
  esac
  mv "$out.partial" "$out"
  echo "== $system seed $seed: done in $((SECONDS - start)) s"
}

for seed in ${SEEDS:-0 1 2}; do
  for system in $SYSTEMS; do
    run_one "$system" "$seed"
  done
done

$PYTHON scripts/frozen_report.py "$RESULTS"
