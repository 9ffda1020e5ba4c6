"""The report rendered from a stored results file (30 runs of the 100-step CPU
grid) is byte-identical to the stored rendering: refactors of the report modules
(stats, tables, conclusions, plots, markdown) must not change a figure or a word."""
from pathlib import Path

from spacy_softprompt.study.report import render_report

FIXTURES = Path(__file__).parent / "fixtures"
RESULTS = FIXTURES / "study_cpu_100steps.jsonl"


def test_report_of_a_stored_results_file_is_unchanged(tmp_path):
    summary = render_report(RESULTS, tmp_path, plots=False)
    report = (tmp_path / "report.md").read_text(encoding="utf8").replace(f"`{RESULTS}`", "`RESULTS`")
    assert report == (FIXTURES / "study_cpu_100steps.report.md").read_text(encoding="utf8")
    assert (tmp_path / "results.csv").read_bytes() == (FIXTURES / "study_cpu_100steps.results.csv").read_bytes()
    assert summary["runs"] == 30 and summary["failed"] == 0
