"""One study run in its own process (so its wall time and peak memory are its own):

    python -m spacy_softprompt.study.worker SPEC.json RESULT.json WORK_DIR [--keep-models]

Reads a :class:`~spacy_softprompt.study.runner.RunSpec`, trains and evaluates
(:func:`~spacy_softprompt.study.runner.execute_run`) and writes the result JSON;
the runner turns it into a results row. Training logs go to stdout. malloc keeps
glibc's own behaviour, as ``train`` does by default: keeping freed memory
(:mod:`spacy_softprompt.memory`) let a fine-tuning run's heap grow until it was
killed for memory.
"""
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    keep_models = "--keep-models" in args
    args = [a for a in args if a != "--keep-models"]
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    spec_path, result_path, work_dir = map(Path, args)
    from .runner import RunSpec, execute_run

    spec = RunSpec.from_dict(json.loads(spec_path.read_text(encoding="utf8")))
    result = execute_run(spec, spec_path.parent, work_dir, keep_models=keep_models)
    tmp = result_path.with_name(result_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str), encoding="utf8")
    tmp.replace(result_path)
    if result.get("status") != "ok":
        print(result.get("traceback") or result.get("error"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
