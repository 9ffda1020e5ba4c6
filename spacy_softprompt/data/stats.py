"""Conversion statistics: counts plus the issues met, printable and JSON-serialisable."""
import json
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Iterable, List

from .errors import BratIssue

_COUNTS = (
    "documents",
    "entities",
    "entities_dropped",
    "discontinuous",
    "aligned_tokenizer",
    "aligned_split",
    "unalignable",
    "relations",
    "relations_dropped",
    "relations_unresolved",
)


@dataclass
class ConversionStats:
    """What a brat -> Doc conversion kept, aligned, dropped and complained about.

    ``entities`` counts the entities a schema keeps; each is aligned by the
    tokenizer alone, aligned after splitting tokens at gold boundaries, or
    unalignable (kept in ``doc._.brat``). ``relations`` are the relations put
    on docs; ``relations_dropped`` were left out by the schema,
    ``relations_unresolved`` name a missing id.
    """

    documents: int = 0
    entities: int = 0
    entities_dropped: int = 0
    discontinuous: int = 0
    aligned_tokenizer: int = 0
    aligned_split: int = 0
    unalignable: int = 0
    relations: int = 0
    relations_dropped: int = 0
    relations_unresolved: int = 0
    issues: List[BratIssue] = field(default_factory=list)

    @property
    def span_text_mismatches(self) -> int:
        return sum(1 for issue in self.issues if issue.kind == "span_text")

    @property
    def tokenizer_rate(self) -> float:
        """Share of entities on token boundaries with the tokenizer alone."""
        return self.aligned_tokenizer / self.entities if self.entities else 1.0

    @property
    def aligned_rate(self) -> float:
        """Share of entities aligned after gold-boundary splitting."""
        return (self.aligned_tokenizer + self.aligned_split) / self.entities if self.entities else 1.0

    def issue_counts(self) -> Dict[str, int]:
        return dict(Counter(issue.kind for issue in self.issues))

    def add_issues(self, issues: Iterable[BratIssue]) -> None:
        self.issues.extend(issues)

    def merge(self, other: "ConversionStats") -> "ConversionStats":
        """Add ``other``'s counts and issues to this one (returns self)."""
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.issues.extend(other.issues)
        return self

    def to_dict(self) -> Dict[str, Any]:
        data: Dict[str, Any] = {name: getattr(self, name) for name in _COUNTS}
        data["span_text_mismatches"] = self.span_text_mismatches
        data["tokenizer_rate"] = round(self.tokenizer_rate, 6)
        data["aligned_rate"] = round(self.aligned_rate, 6)
        data["issue_counts"] = self.issue_counts()
        data["issues"] = [issue.to_dict() for issue in self.issues]
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ConversionStats":
        known = {f.name for f in fields(cls)} - {"issues"}
        stats = cls(**{k: v for k, v in data.items() if k in known})
        stats.issues = [BratIssue.from_dict(i) for i in data.get("issues", [])]
        return stats

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    def summary(self) -> str:
        """The counts on a few lines (no issue list)."""
        return "\n".join(
            [
                f"documents: {self.documents}",
                f"entities: {self.entities} kept, {self.entities_dropped} dropped by schema, "
                f"{self.discontinuous} discontinuous",
                f"alignment: {self.aligned_tokenizer} by tokenizer ({self.tokenizer_rate:.2%}), "
                f"{self.aligned_split} after splitting ({self.aligned_rate:.2%} aligned), "
                f"{self.unalignable} unalignable",
                f"span text mismatches: {self.span_text_mismatches}",
                f"relations: {self.relations} kept, {self.relations_dropped} dropped by schema, "
                f"{self.relations_unresolved} unresolved",
                f"issues: {len(self.issues)} {self.issue_counts() or ''}".rstrip(),
            ]
        )

    def __str__(self) -> str:
        lines = [self.summary()]
        lines.extend(f"  {issue}" for issue in self.issues)
        return "\n".join(lines)
