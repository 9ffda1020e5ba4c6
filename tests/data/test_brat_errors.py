"""BratIssue, BratError and the issue collector."""
import logging

import pytest

from spacy_softprompt.data.errors import BratError, BratIssue, IssueCollector, shorten


def test_issue_excerpt_is_short_and_one_line():
    issue = BratIssue("a.ann", 3, "T1", "bad", "x" * 100 + "\nmore")
    assert len(issue.excerpt) <= 40
    assert "\n" not in issue.excerpt
    assert str(issue).startswith("a.ann:3 [T1]: bad")


def test_shorten_marks_cut_text():
    assert shorten("abc") == "abc"
    assert shorten("a" * 50).endswith("…") and len(shorten("a" * 50)) == 40
    assert shorten("a\r\nb") == "a\\r\\nb"


def test_issue_round_trips_as_dict():
    issue = BratIssue("a.ann", 3, "T1", "bad", "exc", kind="offsets")
    assert BratIssue.from_dict(issue.to_dict()) == issue


def test_collector_warns_and_continues(caplog):
    collector = IssueCollector()
    with caplog.at_level(logging.WARNING, logger="spacy_softprompt.data"):
        collector.report("a.ann", 1, "T1", "first")
        collector.report("a.ann", 2, "T2", "second")
    assert len(collector) == 2
    assert "a.ann:1 [T1]: first" in caplog.text


def test_collector_strict_raises_brat_error_with_issue():
    collector = IssueCollector(strict=True)
    with pytest.raises(BratError) as err:
        collector.report("a.ann", 7, "R2", "missing argument")
    assert err.value.issue.line == 7
    assert "a.ann:7 [R2]" in str(err.value)
    assert isinstance(err.value, ValueError)
