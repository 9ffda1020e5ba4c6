"""Write the two pipelines of ``tests/test_saved_before_move.py`` and what they predict.

Run once, from the code *before* the heads/ and mrc/ subpackages were made
(issue 15), so that the test can show that pipelines saved by older code still
load and predict the same with the moved code.  Kept to show how the files were
made; do not rerun it to "refresh" them (that would test nothing).

    python tests/data/pre_move/make_pipelines.py tests/data/pre_move

It uses registered names only (factories, architectures, the shipped config),
never module paths.  Both pipelines sit on a tiny random MegatronBert (hidden
size 16) that is written to a temporary folder and deleted afterwards: the
pipelines hold their backbone (``save_backbone = true``).

* ``single_pass``: ``configs/tok_soft_cpu.cfg`` (transformer with a deep soft
  prompt -> token_ner -> relation_extractor), trained 30 steps on the toy docs;
* ``mrc``: mrc_ner (soft queries) -> mrc_relations (hard queries), 80 steps.

``expected.json``: per pipeline and text, the entities (``doc.ents`` and the
``entities`` span group, with scores where the component writes them) and the
relations (with scores).
"""
import json
import sys
import tempfile
from pathlib import Path

import spacy
from spacy.training import Example
from spacy.util import fix_random_seed, load_config, load_model_from_config

import spacy_softprompt  # noqa: F401
from spacy_softprompt.annotations import get_relations
from spacy_softprompt.optimizers import PromptAdam
from spacy_softprompt.testing import make_random_encoder, toy_docs

REPO = Path(__file__).resolve().parents[3]

TEXTS = [
    "aspirin 10 mg daily for fever",
    "heparin 5 ml twice after surgery",
    "warfarin 2 mg daily was held",
    "patient was given insulin 5 ml daily for pain",
    "metformin 500 mg po bid",
    "",
]


def predictions(nlp, texts=TEXTS):
    out = []
    for doc in nlp.pipe(texts):
        group = doc.spans.get("entities")
        scores = group.attrs.get("scores") if group is not None else None
        out.append(
            {
                "text": doc.text,
                "ents": [[e.start_char, e.end_char, e.label_] for e in doc.ents],
                "spans": [[e.start_char, e.end_char, e.label_] for e in group] if group is not None else None,
                "span_scores": [float(s) for s in scores] if scores is not None else None,
                "relations": [
                    [r["label"], list(r["arg1"]), list(r["arg2"]), float(r["score"]) if r.get("score") is not None else None]
                    for r in get_relations(doc)
                ],
            }
        )
    return out


def single_pass(backbone: Path):
    fix_random_seed(0)
    config = load_config(
        REPO / "configs" / "tok_soft_cpu.cfg",
        overrides={
            "paths.backbone": str(backbone),
            "components.transformer.model.get_spans.window": 48,
            "components.transformer.model.get_spans.stride": 40,
        },
        interpolate=True,
    )
    nlp = load_model_from_config(config, auto_fill=True, validate=True)
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in toy_docs(nlp)]
    nlp.initialize(lambda: examples)
    optimizer = PromptAdam(learn_rate=3e-3, prompt_learn_rate=3e-2, use_averages=False)
    for _ in range(30):
        nlp.update(examples, sgd=optimizer)
    return nlp


def mrc(backbone: Path):
    fix_random_seed(0)
    nlp = spacy.blank("en")
    model = {"name": str(backbone), "prompt_length": 4, "prompt_depth": "deep", "init_seed": 0, "hidden_width": 16}
    shared = {"model": model, "loss_weights": {"positive": 5.0}}
    nlp.add_pipe("mrc_ner", config={"query_mode": "soft", "window_pieces": 64, **shared})
    nlp.add_pipe("mrc_relations", config={"query_mode": "hard", **shared})
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in toy_docs(nlp)]
    nlp.initialize(lambda: examples)
    optimizer = PromptAdam(learn_rate=1e-2, prompt_learn_rate=3e-2, use_averages=False)
    for _ in range(80):
        nlp.update(examples, sgd=optimizer)
    return nlp


def main(out_dir: str) -> int:
    out = Path(out_dir)
    expected = {}
    names = {"single_pass": single_pass, "mrc": mrc}
    with tempfile.TemporaryDirectory() as tmp:
        backbone = make_random_encoder(Path(tmp) / "backbone", "megatron-bert", hidden_size=16, num_heads=2, vocab_padding=7)
        for name, build in names.items():
            build(backbone).to_disk(out / name)
    for name in names:  # the backbone's folder is gone: the pipelines hold their own copy
        expected[name] = predictions(spacy.load(out / name))
    expected["made_with"] = {"spacy_softprompt": spacy_softprompt.__version__, "spacy": spacy.__version__}
    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
