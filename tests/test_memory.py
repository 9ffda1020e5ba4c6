"""spacy_softprompt.memory: freed memory kept for reuse (glibc), and the setting reaching every worker."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy

from spacy_softprompt import memory
from spacy_softprompt.memory import MALLOC_ENV, apply_malloc_setting, malloc_is_glibc
from spacy_softprompt.parallel import WorkerPool

REPO = Path(__file__).resolve().parents[1]
needs_glibc = pytest.mark.skipif(not malloc_is_glibc(), reason="mallopt is set on Linux with glibc only")

# page faults of repeated large torch allocations (the encoder's per-batch pattern), in a fresh process
_FAULTS = """
import json, resource, sys
from spacy_softprompt.memory import apply_malloc_setting
retained = apply_malloc_setting(sys.argv[1])
import torch
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(8):
    before = faults()
    big, small = torch.ones((64 << 20) // 4), torch.ones((16 << 20) // 4)
    del big, small
    counts.append(faults() - before)
print(json.dumps({"retained": retained, "faults": counts}))
"""


def _faults(setting: str) -> dict:
    result = subprocess.run([sys.executable, "-c", _FAULTS, setting], capture_output=True, text=True, cwd=str(REPO),
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@needs_glibc
def test_retained_memory_is_reused_without_page_faults():
    pages = (64 << 20) // 4096
    default, retained = _faults("default"), _faults("retain")
    assert default["retained"] is False and retained["retained"] is True
    # the heap settles within the first repeats; the last four show the steady state
    steady = lambda counts: sorted(counts[-4:])[2]  # noqa: E731 - upper median of the last four repeats
    assert steady(default["faults"]) > pages // 2  # glibc maps and faults in the 64 MB again every time
    assert steady(retained["faults"]) < pages // 10  # kept: the pages are reused


def test_setting_is_checked_and_default_changes_nothing(monkeypatch):
    with pytest.raises(ValueError, match=MALLOC_ENV):
        apply_malloc_setting("keep")
    monkeypatch.setattr(memory, "_retained", False)
    monkeypatch.delenv(MALLOC_ENV, raising=False)
    assert apply_malloc_setting() is False and apply_malloc_setting("default") is False
    monkeypatch.setenv(MALLOC_ENV, "nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        apply_malloc_setting()


def test_nothing_is_set_where_malloc_is_not_glibc(monkeypatch):
    monkeypatch.setattr(memory, "_retained", False)
    monkeypatch.setattr(memory, "malloc_is_glibc", lambda: False)
    assert memory.retain_freed_memory() is False and memory.memory_is_retained() is False


def _nlp():
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    return nlp


@needs_glibc
@pytest.mark.parametrize("setting", ["retain", "default"])
def test_spawned_workers_follow_the_parents_setting(monkeypatch, setting):
    monkeypatch.setenv(MALLOC_ENV, setting)
    with WorkerPool(_nlp(), 2) as pool:
        retained = pool.memory_retained()
    assert retained and set(retained) == {setting == "retain"}


def test_annotate_refuses_an_unknown_malloc_setting(tmp_path, capsys):
    from spacy_softprompt.cli import main

    (tmp_path / "notes").mkdir()
    with pytest.raises(SystemExit) as info:
        main(["annotate", "model", str(tmp_path / "notes"), str(tmp_path / "out"), "--malloc", "keep"])
    assert info.value.code == 2 and "--malloc 'keep'" in capsys.readouterr().err


def test_train_refuses_an_unknown_malloc_setting(tmp_path, capsys):
    from spacy_softprompt.cli import main

    config = tmp_path / "c.cfg"
    config.write_text("[nlp]\n", encoding="utf8")
    with pytest.raises(SystemExit) as info:
        main(["train", str(config), "--malloc", "keep"])
    assert info.value.code == 2 and "--malloc 'keep'" in capsys.readouterr().err


class _Stop(BaseException):
    """Ends a command right after it chose its malloc setting."""


@pytest.mark.parametrize("args, expected", [([], "default"), (["--malloc", "retain"], "retain")])
def test_train_leaves_malloc_alone_unless_asked(tmp_path, monkeypatch, args, expected):
    """A whole training run fragments a retained heap (docs/speed.md), so `train` opts in only on request."""
    from spacy_softprompt import cli

    chosen = []

    def record(setting=None):
        chosen.append(setting)
        raise _Stop

    monkeypatch.setattr(cli, "apply_malloc_setting", record)
    config = tmp_path / "c.cfg"
    config.write_text("[nlp]\n", encoding="utf8")
    with pytest.raises(_Stop):
        cli.main(["train", str(config), *args])
    assert chosen == [expected]


def test_study_worker_leaves_malloc_alone(tmp_path, monkeypatch):
    from spacy_softprompt.study import runner, worker

    monkeypatch.setattr(memory, "_retained", False)
    monkeypatch.setattr(memory, "retain_freed_memory", lambda *a, **k: pytest.fail("the study worker kept freed memory"))
    monkeypatch.setattr(runner.RunSpec, "from_dict", staticmethod(lambda data: data))
    monkeypatch.setattr(runner, "execute_run", lambda spec, run_dir, work_dir, keep_models=False: {"status": "ok"})
    spec, result = tmp_path / "spec.json", tmp_path / "result.json"
    spec.write_text("{}", encoding="utf8")
    assert worker.main([str(spec), str(result), str(tmp_path / "work")]) == 0
    assert json.loads(result.read_text(encoding="utf8")) == {"status": "ok"}
    assert memory.memory_is_retained() is False
