"""Acceptance of issue #13 on the shared datasets: each converted by `datasets` to Parquet and to a
`save_to_disk` directory gives byte-identical examples (input_ids, labels, source_line, turn, template_vars:
every column but the file name) and the same rejects as its JSON source, with a real tokenizer and its own
chat template (tools, reasoning, loss weights, ShareGPT, Alpaca). The same again from Python, with the
`datasets.Dataset` itself as the input."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import SHARED_DIR, requires_shared

import sftprep
from sftprep.errors import InputError

datasets = pytest.importorskip("datasets")
DATA = SHARED_DIR / "data"
TOKENIZER = SHARED_DIR / "tokenizers" / "qwen2.5"
FILES = sorted(p for p in DATA.glob("*/*.json*") if p.name != "dataset_info.json") if DATA.is_dir() else []


def examples(out: Path) -> list[dict[str, Any]]:
    return [
        r
        for p in sorted(out.glob("data-*.parquet"))
        for r in pq.read_table(p).drop_columns(["source_file"]).to_pylist()
    ]


def prepare(src: Any, out: Path) -> dict[str, Any]:
    return sftprep.prepare(src, str(out), tokenizer=str(TOKENIZER), workers=1, overwrite=True)


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    datasets.disable_progress_bars()
    return tmp_path_factory.mktemp("hf_cache")


@requires_shared
@pytest.mark.shared
@pytest.mark.parametrize("src", FILES, ids=[p.name for p in FILES])
def test_parquet_and_save_to_disk_give_the_json_sources_examples(src: Path, tmp_path: Path, hf_cache: Path) -> None:
    ds = datasets.load_dataset("json", data_files=str(src), split="train", cache_dir=str(hf_cache))
    ds.to_parquet(str(tmp_path / "data.parquet"))
    ds.save_to_disk(str(tmp_path / "disk"))
    reference = prepare(str(src), tmp_path / "json")
    if reference["examples_written"] == 0:  # no record of a known shape (MT-Bench questions and answers)
        assert set(reference["rejected_by_reason"]) == {"unknown_format"}
        for converted in ("data.parquet", "disk"):
            with pytest.raises(InputError, match=r"every row of .* has these columns: refused before the run"):
                prepare(str(tmp_path / converted), tmp_path / "x")
        return
    expected = examples(tmp_path / "json")
    for converted in ("data.parquet", "disk"):
        m = prepare(str(tmp_path / converted), tmp_path / f"out_{converted}")
        assert examples(tmp_path / f"out_{converted}") == expected, converted
        assert (m["records_read"], m["rejected_by_reason"]) == (
            reference["records_read"],
            reference["rejected_by_reason"],
        )
    m = prepare(ds, tmp_path / "from_python")
    assert examples(tmp_path / "from_python") == expected
    assert Counter(pq.read_table(tmp_path / "from_python" / "data-00000.parquet")["source_file"].to_pylist()) == {
        "dataset": len(pq.read_table(tmp_path / "from_python" / "data-00000.parquet"))
    }
    shutil.rmtree(tmp_path / "disk")
