"""What the oracle reads of a run (tests/oracle.py): the source records by line, OUT_DIR's examples and
rejects, and invariant 3 (every input record is in the output or in rejects.jsonl, counts reconcile)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq


def snippet(text: str, width: int = 160) -> str:
    return repr(text) if len(text) <= width else f"{text[: width // 2]!r}...{text[-width // 2 :]!r} (len {len(text)})"


def read_source_records(path: str | Path) -> dict[int, Any]:
    """{1-based line (JSONL) or 1-based index (JSON array): parsed record, or None if it does not parse}."""
    data = Path(path).read_bytes()
    text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8-sig")
    if text.lstrip().startswith("["):
        return dict(enumerate(json.loads(text), 1))
    lines = text.split("\n")
    if next((ln for ln in lines if ln.strip()), "").strip() == "{":  # one pretty-printed object
        return {1: json.loads(text)}
    return {n: _loads(line) for n, line in enumerate(lines, 1) if line.strip()}


def _loads(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def iter_output(out_dir: str | Path) -> Iterator[dict[str, Any]]:
    for name in json.loads((Path(out_dir) / "manifest.json").read_text("utf-8"))["shards"]:
        yield from pq.read_table(Path(out_dir) / name).to_pylist()


def read_rejects(out_dir: str | Path) -> list[dict[str, Any]]:  # split("\n"), not splitlines(): U+2028 is data
    return [json.loads(x) for x in (Path(out_dir) / "rejects.jsonl").read_text("utf-8").split("\n") if x.strip()]


def check_reconciliation(out_dir: str | Path, inputs: Sequence[str | Path]) -> list[str]:
    """Invariant 3: every input record is in the output or in rejects.jsonl (not both); counts reconcile."""
    problems: list[str] = []
    manifest = json.loads((Path(out_dir) / "manifest.json").read_text("utf-8"))
    for name, c in manifest["per_file"].items():
        if not c["reconciled"] or c["records_read"] != c["records_with_examples"] + c["records_rejected"]:
            problems.append(f"{name}: per_file counts do not reconcile: {c}")
    written = {(e["source_file"], e["source_line"]) for e in iter_output(out_dir)}
    rejects = read_rejects(out_dir)
    rejected = [(r["source_file"], r["source_line"]) for r in rejects if "turn" not in r]
    problems += [f"reject without a reason/message: {snippet(json.dumps(r))}" for r in rejects if not r.get("reason")]
    problems += [f"reject without a reason/message: {snippet(json.dumps(r))}" for r in rejects if not r.get("message")]
    if len(set(rejected)) != len(rejected):
        problems.append("a record is rejected twice")
    if written & set(rejected):
        problems.append(f"records both written and rejected: {sorted(written & set(rejected))[:5]}")
    expected = {(str(p), line) for p in inputs for line in read_source_records(p)}
    if (seen := written | set(rejected)) != expected:
        problems.append(f"records missing: {sorted(expected - seen)[:5]}; unknown: {sorted(seen - expected)[:5]}")
    if manifest["records_read"] != len(written) + len(rejected):
        problems.append(f"records_read {manifest['records_read']} != {len(written)} written + {len(rejected)} rejected")
    return problems
