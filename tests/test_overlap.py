"""pipe_overlapped / annotate(overlap=True): the front of the next batch runs in a
background thread while the back runs on this one; the outputs are nlp.pipe's."""
import json
import threading

import pytest
from spacy.language import Language

from spacy_softprompt.annotate import annotate
from spacy_softprompt.annotations import get_relations
from spacy_softprompt.overlap import pipe_overlapped, prefetched, split_pipeline

from test_annotate import TEXTS, make_nlp

#: filled by the components below: (stage, thread name, batch's first text)
EVENTS = []
FRONT_STARTED = threading.Event()


@Language.component("test_overlap_front")
def front_marker(doc):
    EVENTS.append(("front", threading.current_thread().name, doc.text))
    if doc.text == "second batch":
        FRONT_STARTED.set()
    if "FRONTBOOM" in doc.text:
        raise ValueError("front cannot process this one")
    return doc


@Language.component("test_overlap_back")
def back_marker(doc):
    EVENTS.append(("back", threading.current_thread().name, doc.text))
    if doc.text == "first batch":
        # the front of the next batch must be running while the back works on this one
        assert FRONT_STARTED.wait(timeout=20), "the next batch's front did not start during this batch's back"
    if "BACKBOOM" in doc.text:
        raise ValueError("back cannot process this one")
    return doc


def marked_nlp():
    nlp = make_nlp()
    nlp.add_pipe("test_overlap_front")
    nlp.add_pipe("test_overlap_back")
    return nlp


def test_the_next_front_runs_in_another_thread_during_this_back():
    EVENTS.clear()
    FRONT_STARTED.clear()
    nlp = marked_nlp()
    texts = ["first batch", "aspirin", "second batch", "heparin", "third"]
    docs = list(pipe_overlapped(nlp, texts, batch_size=2, front_end="test_overlap_front"))
    main = threading.current_thread().name
    fronts = {name for stage, name, _ in EVENTS if stage == "front"}
    backs = {name for stage, name, _ in EVENTS if stage == "back"}
    assert backs == {main} and main not in fronts
    assert [d.text for d in docs] == texts
    assert [[(e.text, e.label_) for e in d.ents] for d in docs] == [
        [(e.text, e.label_) for e in d.ents] for d in nlp.pipe(texts, batch_size=2)
    ]


def test_split_pipeline_at_the_transformer_or_a_named_component():
    nlp = marked_nlp()
    front, back = split_pipeline(nlp, "entity_ruler")
    assert [n for n, _ in front] == ["entity_ruler"] and [n for n, _ in back] == ["test_overlap_front", "test_overlap_back"]
    with pytest.raises(ValueError, match="entity_ruler"):  # a named component that is not there: its list
        split_pipeline(nlp, "no_such_component")
    front, back = split_pipeline(nlp)  # no transformer: only the tokenizer runs ahead
    assert front == [] and [n for n, _ in back] == nlp.pipe_names
    nlp.add_pipe("test_overlap_front", name="transformer", after="entity_ruler")
    front, back = split_pipeline(nlp)
    assert [n for n, _ in front] == ["entity_ruler", "transformer"]


def test_prefetched_keeps_order_and_raises_each_failure_from_its_own_item():
    def square(x):
        if x == 3:
            raise ValueError("three")
        return x * x

    got = []
    for item, future in prefetched(square, range(6), ahead=2):
        try:
            got.append((item, future.result()))
        except ValueError as err:
            got.append((item, str(err)))
    assert got == [(0, 0), (1, 1), (2, 4), (3, "three"), (4, 16), (5, 25)]


@pytest.mark.parametrize("boom", ["FRONTBOOM", "BACKBOOM"])
def test_annotate_with_overlap_isolates_a_failure_and_matches_one_pass(tmp_path, boom, monkeypatch):
    monkeypatch.setattr("spacy_softprompt.overlap.FRONT_END", "test_overlap_front")
    FRONT_STARTED.set()  # the back's wait is for the test above
    folder = tmp_path / "notes"
    folder.mkdir()
    for name, text in {**TEXTS, "boom": f"aspirin {boom}"}.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf8")
    nlp = marked_nlp()
    plain = annotate(nlp, folder, tmp_path / "plain.jsonl", output_format="jsonl", batch_size=2, progress=False)
    over = annotate(nlp, folder, tmp_path / "over.jsonl", output_format="jsonl", batch_size=2, progress=False, overlap=True)
    assert over.to_dict() == plain.to_dict()
    assert over.written == len(TEXTS) and [f["id"] for f in over.failed] == ["boom"]
    assert (tmp_path / "over.jsonl").read_text(encoding="utf8") == (tmp_path / "plain.jsonl").read_text(encoding="utf8")


def test_annotate_with_overlap_in_worker_processes_matches_one_process(tmp_path):
    """Each worker overlaps the batches of its chunk: the output equals one process without overlap."""
    folder = tmp_path / "notes"
    folder.mkdir()
    texts = {f"n{i:02d}": f"aspirin {i} and heparin" if i % 3 else f"note {i}" for i in range(20)}
    texts["boom"] = "aspirin BOOM"
    for name, text in texts.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf8")
    nlp = make_nlp("test_explode_on_boom")
    nlp.add_pipe("test_overlap_front", name="transformer", after="entity_ruler")  # the front ends here
    one = annotate(nlp, folder, tmp_path / "one.jsonl", output_format="jsonl", batch_size=2, progress=False)
    two = annotate(nlp, folder, tmp_path / "two.jsonl", output_format="jsonl", batch_size=2, n_process=2,
                   progress=False, overlap=True)
    assert two.to_dict() == one.to_dict() and [f["id"] for f in two.failed] == ["boom"]
    assert (tmp_path / "two.jsonl").read_text(encoding="utf8") == (tmp_path / "one.jsonl").read_text(encoding="utf8")


def test_overlapped_pipeline_gives_the_pipelines_entities_and_relations(trained):
    nlp, texts = trained

    def annotations(docs):
        return [
            ([(e.start, e.end, e.label_) for e in d.ents], json.dumps(get_relations(d), sort_keys=True, default=str))
            for d in docs
        ]

    expected = annotations(nlp.pipe(texts, batch_size=3))
    assert any(ents for ents, _ in expected)
    assert annotations(pipe_overlapped(nlp, texts, batch_size=3)) == expected


def test_cli_passes_overlap_to_the_ray_engine(tmp_path, monkeypatch):
    """``annotate --engine ray --overlap`` hands the option to every worker (annotate_on_ray)."""
    from typer.testing import CliRunner

    import spacy_softprompt.scale as scale
    from spacy_softprompt.cli import app

    seen = {}
    monkeypatch.setattr(scale, "annotate_on_ray", lambda *a, **kw: seen.update(kw) or {"notes": 1, "ok": 1, "failed": 0})
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("aspirin", encoding="utf8")
    CliRunner().invoke(app, ["annotate", "m", str(notes), str(tmp_path / "out"), "--engine", "ray", "--overlap"])
    assert seen.get("overlap") is True and seen.get("batch_size") == 16


def test_overlapped_pipe_without_a_transformer_runs_the_tokenizer_ahead():
    nlp = make_nlp()
    texts = list(TEXTS.values()) * 3
    expected = [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts, batch_size=2)]
    assert [[(e.start, e.end, e.label_) for e in d.ents] for d in pipe_overlapped(nlp, texts, batch_size=2)] == expected


def test_the_front_thread_is_put_on_the_callers_gpu(monkeypatch):
    """CUDA's current device is per thread (cupy, torch): the front thread is set to the caller's
    device before it runs (a stand-in cupy module records the calls; no GPU needed)."""
    import sys
    import types

    from spacy_softprompt.overlap import current_devices

    used = []

    class Device:
        def __init__(self, i):
            self.i = i

        def use(self):
            used.append((threading.current_thread().name, self.i))

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 1), Device=Device))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert [f.result() for _, f in prefetched(lambda x: x + 1, [1, 2])] == [2, 3]
    assert len(used) == 1 and used[0][1] == 1 and used[0][0] != threading.current_thread().name
    monkeypatch.delitem(sys.modules, "cupy")
    current_devices()()  # without cupy (and without CUDA in torch): nothing to do, no error


def test_the_front_thread_sees_the_callers_thinc_ops():
    """thinc keeps its current ops (NumpyOps, CupyOps) in a context variable, which a new thread
    would not have: the front runs in a copy of the caller's context."""
    from thinc.api import NumpyOps, get_current_ops, set_current_ops

    before = get_current_ops()
    mine = NumpyOps()
    set_current_ops(mine)
    try:
        seen = [f.result() for _, f in prefetched(lambda _: get_current_ops(), range(3))]
    finally:
        set_current_ops(before)
    assert all(ops is mine for ops in seen)
