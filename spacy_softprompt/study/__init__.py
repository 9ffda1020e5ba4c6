"""The study as a workflow: strategies x backbones, few-shot, cross-source transfer,
prompt shape and MRC, each one resumable run grid, plus a Markdown report with plots.

* :mod:`.grid` -- a whole study in one YAML file (``study run --grid``; the CPU
  grid is ``docs/study_cpu/grid.yml``): plan, estimate, run, report.
* :mod:`.runner` -- expands a grid into runs, trains each one with ``spacy train``
  (in its own process by default, so wall time and peak memory are per run),
  evaluates ``model-best`` with :func:`spacy_softprompt.evaluation.evaluate_pipeline`,
  counts trainable parameters and appends one JSON line per run to the results
  file (a CSV copy is kept beside it).
* :mod:`.recipe` -- the recipe fingerprint of a run; stale rows.
* :mod:`.curve` -- the dev-score curve of a run and the convergence rule.
* :mod:`.intervals` -- bootstrap intervals of score differences and drops; the verdict rule.
* :mod:`.data` -- deterministic few-shot subsets (nested per seed) and train/dev splits.
* :mod:`.report` -- ``results.jsonl -> report.md`` + PNG plots + ``summary.json``,
  assembled from :mod:`.stats` (numbers from rows), :mod:`.tables` (aggregates),
  :mod:`.conclusions` (the four claims), :mod:`.plots`, :mod:`.labels` and
  :mod:`.markdown` (how figures and sections are written).
* :mod:`.cli` -- ``python -m spacy_softprompt study run|split|subsample`` and
  ``python -m spacy_softprompt report`` (also ``python -m spacy_softprompt.study``).

Importing this package is cheap: spaCy, torch and matplotlib are imported
where they are used.
"""
EXPERIMENTS = ("strategies", "fewshot", "transfer", "prompt-shape", "mrc")
STRATEGIES = ("finetune", "hard", "soft", "soft-frozen")
MODES = ("single", "mrc")
HEADS = ("token_ner", "ner")  # single-pass concept head: tok_<strategy> configs (default) or <strategy> configs

__all__ = ["EXPERIMENTS", "STRATEGIES", "MODES", "HEADS"]
