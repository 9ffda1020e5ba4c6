"""The final check: output ids == input ids, no duplicates, then a success marker.

An output shard whose ids differ from its input shard's is renamed
``*.invalid`` (so a rerun redoes it) and the check fails naming it. On success,
``_SUCCESS.json`` records the counts and ``annotate_errors.jsonl`` lists the
failed notes (id and error, never text); both are rewritten whole each time.
"""
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

from ..safe_io import OutputCorruptError, atomic_write
from .errors import VerificationError
from .outputs import FAILED, read_records, valid_unicode
from .shards import ShardPlan, read_shard

SUCCESS = "_SUCCESS.json"
ERRORS_FILE = "annotate_errors.jsonl"


def verify(plan: ShardPlan, output_format: str, extra: Dict[str, Any] = None) -> Dict[str, Any]:
    """Check every output shard against its input shard; write the marker and return it."""
    marker_path = plan.root / SUCCESS
    marker_path.unlink(missing_ok=True)
    problems: List[str] = []
    all_ids: Counter = Counter()
    failed: List[Dict[str, str]] = []
    for shard in plan.shards:
        out = plan.output_path(shard, output_format)
        if not out.is_file():
            problems.append(f"{shard.name}: no output")
            continue
        expected = [r["id"] for r in read_shard(plan.input_path(shard))]
        if output_format == "parquet":  # Parquet holds valid Unicode only (see outputs._valid_unicode)
            expected = [valid_unicode(i) for i in expected]
        try:
            records = list(read_records(out))
        except OutputCorruptError as err:
            os.replace(out, out.with_name(out.name + ".invalid"))
            problems.append(f"{shard.name}: unreadable output ({err})")
            continue
        got = [r["id"] for r in records]
        if sorted(got) != sorted(expected):
            os.replace(out, out.with_name(out.name + ".invalid"))
            problems.append(f"{shard.name}: output ids differ from input ids ({len(got)} records for {len(expected)} notes)")
            continue
        all_ids.update(got)
        failed.extend({"id": r["id"], "error": r["error"]} for r in records if r["status"] == FAILED)
    duplicates = [doc_id for doc_id, count in all_ids.items() if count > 1]
    if duplicates:
        problems.append(f"{len(duplicates)} note ids appear in more than one output record")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise VerificationError(f"{plan.root}: output incomplete or inconsistent ({shown}); rerun to redo these shards")
    _write_errors(plan.root / ERRORS_FILE, failed)
    marker = {
        "notes": plan.notes,
        "ok": plan.notes - len(failed),
        "failed": len(failed),
        "shards": len(plan.shards),
        "shard_size": plan.shard_size,
        "output_format": output_format,
        "source": plan.source,
        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    atomic_write(marker_path, json.dumps(marker, indent=1))
    return marker


def _write_errors(path: Path, failed: List[Dict[str, str]]) -> None:
    if not failed:
        path.unlink(missing_ok=True)
        return
    atomic_write(path, "".join(json.dumps(entry, ensure_ascii=True) + "\n" for entry in failed))
