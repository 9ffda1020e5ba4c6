#!/usr/bin/env bash
# Train and evaluate every strategy (and the plain spacy-transformers baseline) with the
# project's current variables, one after the other: metrics/<strategy>.json each.
# usage: scripts/compare_strategies.sh [extra spacy project vars, e.g. --vars.max_steps 1600]
set -euo pipefail
cd "$(dirname "$0")/.."
for strategy in ${STRATEGIES:-finetune hard soft soft-frozen baseline-trf}; do
  spacy project run train . --vars.strategy "$strategy" "$@"
  spacy project run evaluate . --vars.strategy "$strategy" "$@"
done
python - <<'PY'
import json, pathlib
rows = []
for path in sorted(pathlib.Path("metrics").glob("*.json")):
    if path.stem.endswith("-package"):
        continue
    m = json.loads(path.read_text())
    rows.append((path.stem, *(m.get(k) or 0.0 for k in ("ents_strict_f", "ents_lenient_f", "rels_strict_f", "rels_lenient_f"))))
print("| strategy | ents strict F1 | ents lenient F1 | rels strict F1 | rels lenient F1 |")
print("| --- | ---: | ---: | ---: | ---: |")
for name, *values in rows:
    print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
PY
