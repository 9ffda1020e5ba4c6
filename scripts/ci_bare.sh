#!/usr/bin/env bash
# CI leg "bare": the package without extras in a fresh venv, then the model wheel in another.
#  1. build our wheel; install torch==2.13.0 and the wheel (no extras, constraints.txt) into a fresh venv;
#  2. scripts/ci_smoke.py: the CLI's --help, spacy.blank, convert, score, a tiny pipeline trained a few
#     steps, saved and loaded;
#  3. `spacy package` that pipeline (the `package` extra brings `build`); its wheel must require
#     spacy-softprompt, spacy-transformers and spaCy;
#  4. a second fresh venv: torch, our wheel, then `pip install` the model wheel alone, and
#     spacy.load("en_softprompt_smoke") from a folder outside the checkout.
# usage: ci_bare.sh [WORK_DIR]   (default: a temporary folder, removed at the end)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
if [ $# -ge 1 ]; then work=$(realpath -m "$1"); mkdir -p "$work"; else work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
constraints="$repo/constraints.txt"
pip="$work/bare/bin/python -m pip"

# 1. our wheel (what a user gets from `pip install spacy-softprompt`) into a venv with no extras
install_bare() {
    "$PYTHON" -m venv "$work/bare"
    $pip wheel -q --no-deps -w "$work/dist" "$repo"
    $pip install -q torch==2.13.0
    $pip install -q -c "$constraints" "$(ls "$work"/dist/spacy_softprompt-*.whl)"
}
TIMEFORMAT="== leg bare: build + install wall %0R s, CPU user %0U s + sys %0S s"
time install_bare
ours=$(ls "$work"/dist/spacy_softprompt-*.whl)
"$work/bare/bin/python" "$repo/scripts/check_constraints.py" --installed-only "$constraints"

# 2. the bare install works on its own
TIMEFORMAT="== leg bare: smoke wall %0R s, CPU user %0U s + sys %0S s"
time (cd "$work" && "$work/bare/bin/python" "$repo/scripts/ci_smoke.py" "$work/smoke")

# 3. package the tiny pipeline as a model wheel
$pip install -q -c "$constraints" "build==$(sed -n 's/^build==//p' "$constraints")"
mkdir -p "$work/packages"
(cd "$work" && "$work/bare/bin/python" -m spacy package "$work/smoke/pipeline" "$work/packages" \
    --name softprompt_smoke --version 0.0.1 --build wheel --force > "$work/package.log") \
    || { cat "$work/package.log"; exit 1; }
model=$(ls "$work"/packages/en_softprompt_smoke-0.0.1/dist/en_softprompt_smoke-0.0.1-*.whl)
"$work/bare/bin/python" - "$model" <<'EOF'
import re, sys, zipfile
archive = zipfile.ZipFile(sys.argv[1])
meta = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
requires = {re.split(r"[<>=!~ ;(]", line.split(":", 1)[1].strip())[0].lower().replace("_", "-")
            for line in meta.splitlines() if line.startswith("Requires-Dist:")}
missing = {"spacy", "spacy-softprompt", "spacy-transformers"} - requires
assert not missing, f"model wheel does not require {sorted(missing)}: {sorted(requires)}"
print("model wheel requires:", ", ".join(sorted(requires)))
EOF

# 4. a fresh venv: torch, our wheel (not on PyPI), then the model wheel alone
mpip="$work/model/bin/python -m pip"
install_model() {
    "$PYTHON" -m venv "$work/model"
    $mpip install -q torch==2.13.0
    $mpip install -q -c "$constraints" "$ours"
    $mpip install -q "$model"
}
TIMEFORMAT="== leg bare: model-wheel venv install wall %0R s, CPU user %0U s + sys %0S s"
time install_model
"$work/model/bin/python" "$repo/scripts/check_constraints.py" --installed-only "$constraints"
mkdir -p "$work/elsewhere"
(cd "$work/elsewhere" && HF_HUB_OFFLINE=1 "$work/model/bin/python" -c '
import spacy
nlp = spacy.load("en_softprompt_smoke")
doc = nlp("aspirin 10 mg daily")
assert nlp.pipe_names == ["transformer", "ner", "relation_extractor"], nlp.pipe_names
assert isinstance(doc._.relations, list)
print("model wheel: spacy.load(\"en_softprompt_smoke\") from", nlp.path)
')
echo "bare leg passed"
