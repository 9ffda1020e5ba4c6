"""Several processes with a trained pipeline whose torch thread pool is already
running in the parent: nlp.pipe(n_process=2) and annotate --n-process 2 finish
(a hang fails under a hard timeout) with the outputs of one process."""
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from spacy_softprompt.parallel import factory_modules, worker_threads

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600  # seconds normally (minutes on a saturated machine); a deadlocked worker never ends

# Long enough that torch runs its kernels on the OpenMP pool (what deadlocks after fork).
NOTES = {f"note{i}": ("aspirin 10 mg daily for fever after surgery . " * (8 + 3 * i)) + f"heparin {i} ml twice" for i in range(6)}

# The parent: 2 torch threads, the pool started by a forward and a large kernel.
WARM_PARENT = """
import json, sys, torch, spacy
torch.set_num_threads(2)
nlp = spacy.load(sys.argv[1])
nlp("aspirin 10 mg daily " * 40)
a = torch.randn(512, 512); (a @ a).relu_(); torch.ones(2_000_000).mul_(2)
assert torch.get_num_threads() == 2
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A soft-prompt pipeline (random BERT, hidden 128) trained for a few steps, and notes."""
    sys.path.insert(0, str(REPO / "tests" / "reliability"))
    from reliability_helpers import build_pipeline
    from spacy.training import Example

    from spacy_softprompt.testing import make_random_encoder, toy_docs

    root = tmp_path_factory.mktemp("parallel")
    encoder = make_random_encoder(root / "encoder", "bert", hidden_size=128, num_heads=2, intermediate_size=512)
    nlp = build_pipeline(encoder, "soft_cpu.cfg")
    examples = [Example(nlp.make_doc(d.text), d) for d in toy_docs(nlp)]
    optimizer = nlp.resume_training()
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    nlp.to_disk(root / "pipeline")
    notes = root / "notes"
    notes.mkdir()
    for name, text in NOTES.items():
        (notes / f"{name}.txt").write_text(text, encoding="utf8")
    return root / "pipeline", notes


def _run(args, timeout=TIMEOUT_S):
    """Run a Python child in its own process group; on timeout kill the whole group
    (spaCy's forked workers included) and fail."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"hung: no result after {timeout} s")
    assert proc.returncode == 0, err[-3000:]
    return out


def test_nlp_pipe_two_processes_after_the_pool_started(trained):
    model, _ = trained
    script = WARM_PARENT + textwrap.dedent(
        """
        texts = json.loads(sys.argv[2])
        single = [d.to_json() for d in nlp.pipe(texts, batch_size=2)]
        multi = [d.to_json() for d in nlp.pipe(texts, batch_size=2, n_process=2)]
        print(json.dumps({"same": multi == single, "ents": sum(len(d["ents"]) for d in single)}))
        """
    )
    result = json.loads(_run(["-c", script, str(model), json.dumps(list(NOTES.values()))]).splitlines()[-1])
    assert result["same"], "two processes gave other docs than one"


def test_annotate_two_processes_after_the_pool_started(trained, tmp_path):
    model, notes = trained
    script = WARM_PARENT + textwrap.dedent(
        """
        from spacy_softprompt.annotate import annotate
        from spacy_softprompt.parallel import WorkerPool
        for n in (1, 2):
            report = annotate(nlp, sys.argv[2], f"{sys.argv[3]}/api{n}.jsonl", output_format="jsonl", batch_size=2, n_process=n, progress=False)
            assert report.written == 6 and not report.failed, report.to_dict()
        with WorkerPool(nlp, 2) as pool:
            print(json.dumps({"threads": [info[1] for info in pool.worker_info()]}))
        """
    )
    out = _run(["-c", script, str(model), str(notes), str(tmp_path)])
    threads = json.loads(out.splitlines()[-1])["threads"]
    assert threads and set(threads) == {worker_threads(2)}
    _run(["-m", "spacy_softprompt", "annotate", str(model), str(notes), str(tmp_path / "cli2.jsonl"), "-f", "jsonl", "-n", "2", "-b", "2", "-q"])

    def records(name):
        lines = (tmp_path / name).read_text(encoding="utf8").splitlines()
        return [json.loads(line) for line in lines]

    one = records("api1.jsonl")
    assert [r["id"] for r in one] == sorted(NOTES)
    assert records("api2.jsonl") == one
    assert records("cli2.jsonl") == one


def _threads_in_child(conn):
    conn.send(torch.get_num_threads())
    conn.close()


def test_forked_child_gets_one_torch_thread():
    import spacy_softprompt  # noqa: F401  (installs the fork guard)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ctx = multiprocessing.get_context("fork")
        recv, send = ctx.Pipe(False)
        child = ctx.Process(target=_threads_in_child, args=(send,))
        child.start()
        assert recv.poll(60)
        assert recv.recv() == 1
        child.join(60)
        assert torch.get_num_threads() == 2  # the parent keeps its own
    finally:
        torch.set_num_threads(before)


def test_worker_threads_share_the_cores():
    assert worker_threads(2, cores=16) == 8
    assert worker_threads(3, cores=16) == 5
    assert worker_threads(4, cores=2) == 1


def test_factory_modules_name_where_components_are_defined():
    import spacy
    from spacy.language import Language

    @Language.component("test_parallel_noop")
    def noop(doc):
        return doc

    nlp = spacy.blank("en")
    nlp.add_pipe("test_parallel_noop")
    nlp.add_pipe("entity_ruler")
    modules = factory_modules(nlp)
    assert __name__ in modules and "spacy.pipeline.entityruler" in modules
