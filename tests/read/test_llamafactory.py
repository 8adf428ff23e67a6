"""LLaMA-Factory compatibility (issue #13): `--dataset-info dataset_info.json --dataset a,b` reads LF's registry
(file_name, formatting, columns, tags), so an LF user's data prepares unchanged. Every dataset of the shared
registry that is a local SFT file prepares; the others are refused saying why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import run_main
from conftest import SHARED_DIR, requires_shared

from sftprep.errors import ConfigError
from sftprep.read.columns import ColumnMap
from sftprep.read.llamafactory import lf_sources, read_registry
from sftprep.read.normalize_conversations import normalize_conversations
from sftprep.read.records import read_records
from sftprep.types import Conversation

LF = SHARED_DIR / "data" / "llama_factory"
INFO = LF / "dataset_info.json"


def local_sft() -> list[str]:
    """The registry's entries with a local file that are SFT data (not preference, KTO, multimodal, pretraining)."""
    if not INFO.is_file():
        return []
    out = []
    for name, entry in read_registry(INFO).items():
        cols = entry.get("columns") or {}
        if not entry.get("file_name") or not (LF / entry["file_name"]).exists() or entry.get("ranking"):
            continue
        if {"kto_tag", "images", "videos", "audios"} & set(cols) or ("prompt" in cols and "response" not in cols):
            continue
        out.append(name)
    return out


@requires_shared
def test_the_shared_registry_has_local_sft_datasets() -> None:
    assert set(local_sft()) >= {"identity", "alpaca_en_demo", "glaive_toolcall_en_demo"}


@requires_shared
@pytest.mark.parametrize("name", local_sft() or ["(none)"])
def test_every_local_sft_dataset_prepares(name: str, tmp_path: Path) -> None:
    r = run_main(tmp_path, "prepare", "--dataset-info", str(INFO), "--dataset", name, "-o", "out", "--workers", "1")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["examples_written"] > 0 and m["records_rejected"] == 0, m["rejected_by_reason"]
    (source,) = m["sources"]
    assert source["name"] == name and source["records_read"] == m["records_read"]
    spec = m["options"]["sources"][0]
    assert spec["format"] in ("alpaca", "sharegpt") and spec["only_mapped"] is True


@requires_shared
def test_several_datasets_are_one_run_with_a_source_each(tmp_path: Path) -> None:
    names = "identity,glaive_toolcall_en_demo"
    r = run_main(tmp_path, "prepare", "--dataset-info", str(INFO), "--dataset", names, "-o", "out", "--workers", "1")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["name"] for s in m["sources"]] == names.split(",")
    assert sum(s["examples"] for s in m["sources"]) == m["examples_written"]


@requires_shared
@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("dpo_en_demo", "a preference dataset (ranking: true)"),
        ("kto_en_demo", "a KTO dataset"),
        ("mllm_demo", "a multimodal dataset (columns images)"),
        ("c4_demo", "a pre-training dataset"),
        ("alpaca_en", "hf_hub_url 'llamafactory/alpaca_en': sftprep reads local files only; fix: download"),
        ("no_such_dataset", "is not in"),
    ],
)
def test_other_entries_are_refused_saying_why(name: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        lf_sources(INFO, [name])


def test_columns_and_tags_of_an_entry(tmp_path: Path) -> None:
    rows = [{"dialog": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "sys": "S",
             "extra": "not read"}]  # fmt: skip
    (tmp_path / "d.json").write_text(json.dumps(rows))
    info = {
        "mine": {
            "file_name": "d.json",
            "formatting": "sharegpt",
            "columns": {"messages": "dialog", "system": "sys"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
            "num_samples": 5,
        },
        "qa": {"file_name": "d.json", "columns": {"prompt": "q", "response": "a", "query": "ctx"}},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    (spec,) = lf_sources(tmp_path / "dataset_info.json", ["mine"])
    assert spec.paths == [str(tmp_path / "d.json")] and spec.examples == 5  # num_samples
    assert spec.columns == {"messages": "dialog", "system": "sys"}
    cmap = ColumnMap.build(spec.columns, spec.tags, only_mapped=True)
    (raw,) = read_records(tmp_path / "d.json")
    conv = normalize_conversations(raw, "sharegpt", columns=cmap)
    assert isinstance(conv, Conversation)
    assert [(m.role, m.content) for m in conv.messages] == [("system", "S"), ("user", "q"), ("assistant", "a")]
    (qa,) = lf_sources(tmp_path / "dataset_info.json", ["qa"])
    assert qa.format == "alpaca" and qa.columns == {"instruction": "q", "input": "ctx", "output": "a"}


def test_registry_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        lf_sources(tmp_path / "missing.json", ["a"])
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ConfigError, match="expected a JSON object of datasets"):
        lf_sources(tmp_path / "bad.json", ["a"])
    (tmp_path / "ok.json").write_text('{"a": {"file_name": "a.json"}}')
    with pytest.raises(ConfigError, match="needs --dataset NAME"):
        lf_sources(tmp_path / "ok.json", [])


@requires_shared
def test_a_registry_in_a_data_config(tmp_path: Path) -> None:
    shutil.copy(INFO, tmp_path / "dataset_info.json")
    shutil.copy(LF / "identity.json", tmp_path / "identity.json")
    (tmp_path / "c.yaml").write_text("dataset_info: dataset_info.json\ndataset: [identity]\nworkers: 1\n")
    r = run_main(tmp_path, "prepare", "--config", "c.yaml", "-o", "out", "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["sources"][0]["name"] == "identity"
