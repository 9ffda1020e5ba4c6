"""One GPU, many CPU workers: ``annotate(n_process=N, gpu_id=...)`` hands the
device setting to every spawned worker; on the CPU the output is that of one process."""
import json

import pytest
import spacy
import torch

from spacy_softprompt.annotate import annotate
from spacy_softprompt.parallel import WorkerError, WorkerPool

TEXTS = {f"note{i}": f"aspirin {i} mg daily, heparin twice. " * (i + 1) for i in range(5)}


def _nlp():
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "Drug", "pattern": "aspirin"}, {"label": "Drug", "pattern": "heparin"}])
    return nlp


@pytest.fixture()
def notes(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    for doc_id, text in TEXTS.items():
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf8")
    return folder


def test_workers_receive_the_device_setting():
    gpu_id = 0 if torch.cuda.is_available() else -1
    with WorkerPool(_nlp(), 2, gpu_id=gpu_id) as pool:
        infos = pool.worker_info()
    assert infos and all(error is None for *_, error in infos)
    assert {device for _, _, device, _ in infos} == {"cuda:0" if gpu_id == 0 else "cpu"}


def test_annotate_n_process_with_gpu_id_matches_one_process(notes, tmp_path):
    nlp = _nlp()
    one = annotate(nlp, notes, tmp_path / "one.jsonl", output_format="jsonl", batch_size=2, progress=False)
    two = annotate(nlp, notes, tmp_path / "two.jsonl", output_format="jsonl", batch_size=2, n_process=2, gpu_id=-1,
                   progress=False)
    assert two.to_dict() == one.to_dict() and one.written == len(TEXTS)
    assert (tmp_path / "two.jsonl").read_text(encoding="utf8") == (tmp_path / "one.jsonl").read_text(encoding="utf8")
    records = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text(encoding="utf8").splitlines()]
    assert sum(len(r["entities"]) for r in records) == sum(2 * (i + 1) for i in range(len(TEXTS)))
    if not torch.cuda.is_available():  # the setting reaches the workers: each tries GPU 0 and says why it cannot
        with pytest.raises(WorkerError, match="GPU"):
            annotate(nlp, notes, tmp_path / "gpu.jsonl", output_format="jsonl", batch_size=2, n_process=2, gpu_id=0,
                     progress=False)
