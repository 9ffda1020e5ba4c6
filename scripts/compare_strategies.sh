#!/usr/bin/env bash
# Train and evaluate every strategy (and the plain spacy-transformers baseline) over several seeds
# with the project's variables, one run after the other; keep metrics/strategies/<mode><strategy>-seed<S>.json
# and print mean ± sd per strategy, then each strategy against soft with a paired bootstrap interval.
# usage: [SEEDS="0 1 2"] [STRATEGIES="finetune hard soft soft-frozen baseline-trf"] [MODE=tok_]
#        scripts/compare_strategies.sh [extra spacy project vars, e.g. --vars.max_steps 1600]
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${MODE-tok_}
mkdir -p metrics/strategies
for seed in ${SEEDS:-0 1 2}; do
  for strategy in ${STRATEGIES:-finetune hard soft soft-frozen baseline-trf}; do
    spacy project run train . --vars.mode "$mode" --vars.strategy "$strategy" --vars.seed "$seed" "$@"
    spacy project run evaluate . --vars.mode "$mode" --vars.strategy "$strategy" --vars.seed "$seed" "$@"
    cp "metrics/${mode}${strategy}.json" "metrics/strategies/${mode}${strategy}-seed${seed}.json"
  done
done
python - "$mode" <<'PY'
import json, pathlib, statistics, sys
mode = sys.argv[1]
runs = {}
for path in sorted(pathlib.Path("metrics/strategies").glob(f"{mode}*-seed*.json")):
    strategy = path.stem[len(mode):].rsplit("-seed", 1)[0]
    runs.setdefault(strategy, []).append(json.loads(path.read_text()))
keys = ("ents_strict_f", "ents_lenient_f", "rels_strict_f", "rels_lenient_f")
print("| strategy | seeds | " + " | ".join(k.replace("_", " ") for k in keys) + " |")
print("| --- | ---: |" + " ---: |" * len(keys))
for strategy, metrics in runs.items():
    cells = []
    for key in keys:
        values = [m.get(key) or 0.0 for m in metrics]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(f"{statistics.mean(values):.3f} ± {sd:.3f}")
    print(f"| {strategy} | {len(metrics)} | " + " | ".join(cells) + " |")
PY
for strategy in ${STRATEGIES:-finetune hard soft soft-frozen baseline-trf}; do
  [ "$strategy" = soft ] && continue
  python -m spacy_softprompt compare metrics/strategies/${mode}soft-seed*.json \
      --vs metrics/strategies/${mode}${strategy}-seed*.json --names "soft,${strategy}"
done
