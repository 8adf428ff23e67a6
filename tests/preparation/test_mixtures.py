"""Mixtures of sources (issue #13): weights, example counts and epochs realised exactly in examples; an eval
split in OUT_DIR/eval (a prepared directory of its own, usable by `train --eval`); dedup and filters counted;
the same config and seed give the same bytes (any worker count, resumed or not)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from cli_helpers import run_main

import sftprep
from sftprep.preparation import mixture
from sftprep.preparation.manifest import open_out_dir


def chats(n: int, tag: str, turns: int = 1) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        messages = []
        for t in range(turns):
            messages += [{"role": "user", "content": f"{tag} question {i}.{t}"},
                         {"role": "assistant", "content": f"{tag} answer {i}.{t}"}]  # fmt: skip
        out.append({"messages": messages})
    return out


def write(path: Path, records: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


@pytest.fixture
def two(tmp_path: Path) -> dict[str, str]:
    return {"a": write(tmp_path / "a.jsonl", chats(400, "A")), "b": write(tmp_path / "b.jsonl", chats(300, "B"))}


def run(tmp_path: Path, out: str, sources: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    kw.setdefault("workers", 1)
    return sftprep.prepare(None, str(tmp_path / out), sources=sources, overwrite=True, **kw)


def rows(out: Path) -> list[dict[str, Any]]:
    return [r for p in sorted(out.glob("data-*.parquet")) for r in pq.read_table(p).to_pylist()]


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_weights_3_to_1_are_realised_with_a_manifest_per_source(tmp_path: Path, two: dict[str, str]) -> None:
    sources = [{"name": "a", "paths": [two["a"]], "weight": 3}, {"name": "b", "paths": [two["b"]], "weight": 1}]
    m = run(tmp_path, "out", sources)
    a, b = m["sources"]
    assert (a["examples"], b["examples"]) == (400, 133)  # a is the limit: 400 / 3 = 133.3 of b
    assert abs(a["realised_ratio"] - 0.75) < 0.01 and abs(b["realised_ratio"] - 0.25) < 0.01
    assert (a["requested_ratio"], b["requested_ratio"]) == (0.75, 0.25)
    assert m["examples_written"] == 533 == len(rows(tmp_path / "out"))
    assert (b["records_in_output"], b["records_not_sampled"]) == (133, 167)
    for s in m["sources"]:
        assert s["records_read"] == s["records_rejected"] + s["records_with_examples"]
        assert s["records_with_examples"] == s["records_in_output"] + s["eval_records"] + s["records_not_sampled"]
    assert m["tokens"] == a["tokens"] + b["tokens"] and m["examples_prepared"] == 700
    # any prefix of the output holds the mixture (sources interleaved, not concatenated)
    seq = [r["source_file"] == two["a"] for r in rows(tmp_path / "out")]
    for n in range(8, len(seq), 7):
        assert abs(sum(seq[:n]) - 0.75 * n) <= 1.5, n


def test_same_config_same_bytes_any_worker_count(tmp_path: Path, two: dict[str, str]) -> None:
    sources = [{"name": "a", "paths": [two["a"]], "weight": 2}, {"name": "b", "paths": [two["b"]], "epochs": 1.5}]
    kw = {"eval_fraction": 0.1, "seed": 11, "dedup": True, "batch_size": 64, "shard_size": 100}
    run(tmp_path, "one", sources, **kw)
    run(tmp_path, "again", sources, **kw)
    run(tmp_path, "two", sources, **{**kw, "workers": 2})
    assert files(tmp_path / "one") == files(tmp_path / "again") == files(tmp_path / "two")
    other = run(tmp_path, "seed", sources, **{**kw, "seed": 12})
    assert files(tmp_path / "seed")["data-00000.parquet"] != files(tmp_path / "one")["data-00000.parquet"]
    assert other["examples_written"] == json.loads(files(tmp_path / "one")["manifest.json"])["examples_written"]


def test_interrupted_while_mixing_resumes_to_the_same_bytes(
    tmp_path: Path, two: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = [{"name": "a", "paths": [two["a"]], "weight": 1}, {"name": "b", "paths": [two["b"]], "weight": 1}]
    run(tmp_path, "ref", sources, eval_fraction=0.2)
    real = mixture.mix

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)  # writes part of the output, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr("sftprep.preparation.run.mix", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "out", sources, eval_fraction=0.2)
    progress = json.loads((tmp_path / ".out.tmp" / "progress.json").read_text())
    assert progress["prepared"] is True  # every record prepared: only the mixing is redone
    monkeypatch.setattr("sftprep.preparation.run.mix", real)
    monkeypatch.setattr("sftprep.preparation.run.Preparer", None)  # resuming prepares nothing again
    run(tmp_path, "out", sources, eval_fraction=0.2, resume=True)
    assert files(tmp_path / "out") == files(tmp_path / "ref")


def test_examples_epochs_and_mixture_examples(tmp_path: Path, two: dict[str, str]) -> None:
    m = run(tmp_path, "n", [{"name": "a", "paths": [two["a"]], "examples": 1000},
                            {"name": "b", "paths": [two["b"]], "epochs": 0.5}])  # fmt: skip
    a, b = m["sources"]
    assert (a["examples"], b["examples"]) == (1000, 150)
    got = Counter((r["source_file"], r["source_line"]) for r in rows(tmp_path / "n"))
    counts = Counter(v for (f, _), v in got.items() if f == two["a"])
    assert counts == {3: 200, 2: 200}  # 1000 of 400: each twice, 200 of them a third time
    assert all(v == 1 for (f, _), v in got.items() if f == two["b"]) and b["records_not_sampled"] == 150
    m = run(tmp_path, "w", [{"name": "a", "paths": [two["a"]], "weight": 1},
                            {"name": "b", "paths": [two["b"]], "weight": 1}], mixture_examples=900)  # fmt: skip
    assert [s["examples"] for s in m["sources"]] == [450, 450]  # b (300) is repeated to its share
    m = run(tmp_path, "e", [{"name": "a", "paths": [two["a"]], "epochs": 2}, {"name": "b", "paths": [two["b"]]}])
    assert [s["examples"] for s in m["sources"]] == [800, 300]


def test_eval_fraction_holds_out_whole_records_in_a_prepared_directory(tmp_path: Path) -> None:
    src = write(tmp_path / "multi.jsonl", chats(200, "M", turns=3))
    m = run(tmp_path, "out", [{"name": "m", "paths": [src]}], eval_fraction=0.25, mask="split-turns")
    out = tmp_path / "out"
    assert m["eval"]["dir"] == "eval" and m["eval"]["records"] == 50 and m["eval"]["examples"] == 150
    _, ev = open_out_dir(out / "eval")  # a prepared directory of its own
    assert ev.split == "eval" and ev.examples_written == 150 and ev.tokenizer == open_out_dir(out)[1].tokenizer
    train_lines = {r["source_line"] for r in rows(out)}
    eval_rows = rows(out / "eval")
    assert not train_lines & {r["source_line"] for r in eval_rows}
    assert Counter(Counter(r["source_line"] for r in eval_rows).values()) == {3: 50}  # every turn of a record
    assert len(train_lines) == 150 and m["examples_written"] == 450
    assert ev.tokens == sum(len(r["input_ids"]) for r in eval_rows)


def test_eval_sources_are_held_out_whole(tmp_path: Path, two: dict[str, str]) -> None:
    sources = [{"name": "a", "paths": [two["a"]]}, {"name": "b", "paths": [two["b"]]}]
    m = run(tmp_path, "out", sources, eval_sources=["b"])
    assert {r["source_file"] for r in rows(tmp_path / "out")} == {two["a"]}
    assert {r["source_file"] for r in rows(tmp_path / "out" / "eval")} == {two["b"]}
    assert m["eval"]["examples"] == 300 and [s["examples"] for s in m["sources"]] == [400, 0]


def test_dedup_keeps_the_first_and_counts_the_rest(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", chats(10, "X") + chats(3, "X"))  # 3 repeats within the file
    b = write(tmp_path / "b.jsonl", chats(5, "X") + chats(5, "Y"))  # 5 repeats of a's records
    m = run(tmp_path, "out", [{"name": "a", "paths": [a]}, {"name": "b", "paths": [b]}], dedup=True)
    assert m["rejected_by_reason"] == {"duplicate": 8} and [s["duplicates"] for s in m["sources"]] == [3, 5]
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert rejects[0]["source_line"] == 11 and f"the same conversation as {a}:1" in rejects[0]["message"]
    assert m["examples_written"] == 15
    prompted = {"name": "b", "paths": [b], "system_prompt": "Be brief."}
    other_prompt = run(tmp_path, "sys", [{"name": "a", "paths": [a]}, prompted], dedup=True)
    assert other_prompt["rejected_by_reason"] == {"duplicate": 3}  # a system prompt makes another conversation


def test_trainable_token_filters(tmp_path: Path) -> None:
    short = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 3
    long = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "word " * 80}]}] * 2
    src = write(tmp_path / "d.jsonl", short + long)
    m = sftprep.prepare(src, str(tmp_path / "out"), min_trainable_tokens=5, workers=1)
    assert m["rejected_by_reason"] == {"too_few_trainable_tokens": 3} and m["examples_written"] == 2
    assert (
        "filtered out: no example of it is within --min-trainable-tokens 5"
        in (tmp_path / "out" / "rejects.jsonl").read_text()
    )
    m = sftprep.prepare(src, str(tmp_path / "out2"), max_trainable_tokens=5, workers=1)
    assert m["rejected_by_reason"] == {"too_many_trainable_tokens": 2} and m["per_file"][src]["filtered"] == 2


def test_a_file_belongs_to_one_source(tmp_path: Path, two: dict[str, str]) -> None:
    r = run_main(tmp_path, "prepare", "--config", str(_config(tmp_path, two["a"], two["a"])), "-o", "x")
    assert r.returncode == 2 and "is in sources 'first' and 'second'; a file belongs to one source" in r.stderr


def _config(tmp_path: Path, a: str, b: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"sources:\n  - {{name: first, paths: [{a}]}}\n  - {{name: second, paths: [{b}]}}\n")
    return path


def test_the_ray_engine_refuses_a_mixture(tmp_path: Path, two: dict[str, str]) -> None:
    pytest.importorskip("ray")
    r = run_main(tmp_path, "prepare", "--config", str(_config(tmp_path, two["a"], two["b"])), "--engine", "ray")
    assert r.returncode == 2 and "need the local engine (drop --engine ray)" in r.stderr


def test_train_uses_the_eval_split(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    src = write(tmp_path / "d.jsonl", chats(40, "T"))
    run(tmp_path, "out", [{"name": "d", "paths": [src]}], eval_fraction=0.25)
    tiny = ("--tiny-hidden", "16", "--tiny-layers", "1", "--tiny-heads", "1", "--no-tensorboard", "--quiet")
    r = run_main(tmp_path, "train", "out", "--eval", "out/eval", "-o", "model", "--max-steps", "2", "--batch-size", "4",
                 *tiny)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    evals = json.loads((tmp_path / "model" / "sftprep_model.json").read_text())["training"]["evals"]
    assert evals and evals[-1]["eval_trainable_tokens"] > 0


def test_the_run_key_covers_the_code_of_every_room() -> None:
    from sftprep.preparation.run import CODE_ROOT, code_files

    rooms = {f.relative_to(CODE_ROOT).parts[0] for f in code_files() if len(f.relative_to(CODE_ROOT).parts) > 1}
    assert {"read", "templates", "tokenize", "labels", "preparation"} <= rooms
    assert CODE_ROOT / "read" / "columnar.py" in code_files()


def test_a_weighted_source_without_examples_shows_in_the_ratios(tmp_path: Path, two: dict[str, str]) -> None:
    bad = write(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "no answer"}]}] * 4)
    m = run(
        tmp_path, "out", [{"name": "a", "paths": [two["a"]], "weight": 3}, {"name": "bad", "paths": [bad], "weight": 1}]
    )
    a, b = m["sources"]
    assert (a["examples"], b["examples"], b["records_rejected"]) == (400, 0, 4)
    assert (b["requested_ratio"], b["realised_ratio"]) == (0.25, 0.0)  # asked, not realised: visible
