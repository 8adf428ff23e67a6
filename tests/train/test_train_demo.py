"""`sftprep demo --quick`: the whole path (synthetic data -> prepare -> train -> generate -> score) runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from sftprep.train.demo import make_records, question, split_pairs


def test_held_out_pairs_are_never_trained_in_either_order() -> None:
    train, held = split_pairs(seed=0, n_eval=200)
    assert len(held) == 200 and len(set(held)) == 200
    trained = set(train)
    assert not any((a, b) in trained or (b, a) in trained for a, b in held)
    assert len(train) + sum(2 if a != b else 1 for a, b in held) == 90 * 90
    records = make_records(train, 500, 0.25, seed=0)
    asked = {m["content"] for r in records for m in r["messages"] if m["role"] == "user"}
    assert not asked & {question(a, b) for a, b in held}
    assert any(len(r["messages"]) == 5 for r in records) and all(r["messages"][0]["role"] == "system" for r in records)


def test_quick_demo_runs_both_masks_in_under_a_minute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sftprep.train.commands import demo_command

    t0 = time.perf_counter()
    rows = demo_command(quick=True, out_dir=tmp_path, quiet=False)
    elapsed = time.perf_counter() - t0
    assert elapsed < 60, elapsed
    assert [r.mask for r in rows] == ["assistant", "none"]
    for r in rows:
        assert r.steps == 25 and r.total == 20 and 0 <= r.correct <= r.total and r.final_loss > 0
        assert len(r.samples) == 20 and all(exp == str(sum(map(int, q[8:-1].split(" + ")))) for q, exp, _ in r.samples)
    # the masks really differ: "none" trains every token, "assistant" only the replies
    manifests = {m: json.loads((tmp_path / f"data-{m}" / "manifest.json").read_text()) for m in ("assistant", "none")}
    assert manifests["none"]["trainable_tokens"] > 3 * manifests["assistant"]["trainable_tokens"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [s["mask"] for s in saved] == ["assistant", "none"] and "exact_match" in saved[0]
    out = capsys.readouterr().out
    assert "exact match" in out and "assistant" in out and "none" in out
