#!/usr/bin/env bash
# Install a packaged pipeline wheel into a fresh virtual environment (no access to
# the training folders) and evaluate it again: proves the wheel stands alone.
# usage: evaluate_package.sh WHEEL PACKAGE_NAME GOLD.spacy OUT.json
set -euo pipefail
wheel=$(realpath "$1"); name=$2; gold=$(realpath "$3"); out=$(realpath -m "$4")
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
pip="$work/venv/bin/python -m pip"
$pip install -q torch==2.13.0
$pip install -q -c "$repo/constraints.txt" "$repo[clinical]"
$pip install -q -c "$repo/constraints.txt" "$wheel"
cp "$gold" "$work/gold.spacy"
cd "$work"
"$work/venv/bin/python" -m spacy_softprompt evaluate "$name" gold.spacy --output "$out"
