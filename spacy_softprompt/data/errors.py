"""Problems found in brat data: one exception type, one issue record, one collector.

Every problem is a :class:`BratIssue` naming the file, the 1-based line of the
``.ann`` file (0 when the problem is not tied to a line, e.g. a missing
``.txt``), the annotation id and a short excerpt (at most 40 characters, never
more of the note text). An :class:`IssueCollector` either logs and keeps going
(the default: one bad line never loses the rest of a file) or, in strict mode,
raises :class:`BratError` on the first issue.
"""
import logging
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Optional

logger = logging.getLogger("spacy_softprompt.data")

MAX_EXCERPT = 40


class BratError(ValueError):
    """Invalid brat data (or an invalid schema); the package's one data exception."""

    def __init__(self, message: str, issue: Optional["BratIssue"] = None) -> None:
        super().__init__(message)
        self.issue = issue


def shorten(text: str, limit: int = MAX_EXCERPT) -> str:
    """``text`` on one line, cut to ``limit`` characters (ending with '…' when cut)."""
    text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


@dataclass(frozen=True)
class BratIssue:
    """One problem in one file: where it is, what it is, and a short excerpt."""

    file: str
    line: int
    ann_id: str
    message: str
    excerpt: str = ""
    kind: str = "invalid"

    def __post_init__(self) -> None:
        object.__setattr__(self, "excerpt", shorten(self.excerpt))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        ann = f" [{self.ann_id}]" if self.ann_id else ""
        excerpt = f" ({self.excerpt!r})" if self.excerpt else ""
        return f"{where}{ann}: {self.message}{excerpt}"

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "BratIssue":
        return cls(**data)


class IssueCollector:
    """Collects issues: log a warning and continue, or raise in strict mode."""

    def __init__(self, strict: bool = False, log: bool = True) -> None:
        self.strict = strict
        self.log = log
        self.issues: List[BratIssue] = []

    def add(self, issue: BratIssue) -> None:
        """Record ``issue``; raise :class:`BratError` when strict."""
        if self.strict:
            raise BratError(str(issue), issue)
        self.issues.append(issue)
        if self.log:
            logger.warning("%s", issue)

    def report(
        self,
        file: str,
        line: int,
        ann_id: str,
        message: str,
        excerpt: str = "",
        kind: str = "invalid",
    ) -> None:
        """Shorthand for ``add(BratIssue(...))``."""
        self.add(BratIssue(file, line, ann_id, message, excerpt, kind))

    def extend(self, issues: Iterable[BratIssue]) -> None:
        for issue in issues:
            self.add(issue)

    def __len__(self) -> int:
        return len(self.issues)
