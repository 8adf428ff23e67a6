"""Invariants 1-3 on every real dataset in ../shared/data, checked by the independent oracle (tests/oracle.py).

Each (dataset, tokenizer/template) pair is prepared with sftprep and every trained turn is compared with
transformers' own apply_chat_template rendering and tokenization; huge files are capped to their first records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_DIR, requires_shared
from oracle import Report, make_oracle, sftprep_loads_each_tokenizer_once
from oracle_output import check_reconciliation, iter_output

import sftprep

pytestmark = requires_shared

DATA_DIR = SHARED_DIR / "data"
TOKENIZERS_DIR = SHARED_DIR / "tokenizers"
NOT_DATASETS = {"dataset_info.json"}
CAP = 300  # records kept of the huge files
CAPPED = {"gsm_8k_train.json", "toolformer-dedupe-only-dataset.json"}

# (tokenizer directory, template): None = the tokenizer's own chat template, else a sftprep built-in.
CONFIGS: list[tuple[str, str | None]] = [
    ("qwen2.5", None),
    ("llama3", None),
    ("phi-3-mini", None),
    ("minimind", None),
    ("qwen2.5", "chatml"),
    ("qwen2.5", "alpaca"),
]


def datasets() -> list[str]:
    if not DATA_DIR.is_dir():
        return []
    files = [p for p in sorted(DATA_DIR.rglob("*")) if p.is_file() and p.name not in NOT_DATASETS]
    return [p.relative_to(DATA_DIR).as_posix() for p in files if p.suffix in (".json", ".jsonl", ".gz")]


def config_id(tokenizer: str, template: str | None) -> str:
    return f"{tokenizer}+{template or 'own'}"


def cases() -> list[Any]:
    out = []
    for name in datasets():
        for tok, tpl in CONFIGS:
            out.append(pytest.param(name, tok, tpl, id=f"{name}-{config_id(tok, tpl)}"))
    return out


@pytest.fixture(scope="module", autouse=True)
def _load_each_tokenizer_once() -> Iterator[None]:
    with sftprep_loads_each_tokenizer_once():
        yield


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Dataset name -> the file to prepare (the huge ones cut to their first CAP records)."""
    out: dict[str, Path] = {}
    capped_dir = tmp_path_factory.mktemp("capped")
    for name in datasets():
        path = DATA_DIR / name
        if path.name in CAPPED:
            records = json.loads(path.read_text("utf-8"))[:CAP]
            path = capped_dir / path.name
            path.write_text(json.dumps(records, ensure_ascii=False, indent=1), "utf-8")
        out[name] = path
    return out


def prepare(path: Path, out: Path, tokenizer: str, template: str | None) -> dict[str, Any]:
    return sftprep.prepare([str(path)], out_dir=str(out), tokenizer=str(TOKENIZERS_DIR / tokenizer), template=template)


@pytest.mark.parametrize(("dataset", "tokenizer", "template"), cases())
def test_invariants_on_real_data(
    dataset: str, tokenizer: str, template: str | None, inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    manifest = prepare(inputs[dataset], out, tokenizer, template)
    problems = check_reconciliation(out, [inputs[dataset]])
    assert not problems, "\n".join(problems)
    report = make_oracle(TOKENIZERS_DIR / tokenizer, template).check_dir(out)
    print(f"{dataset} {config_id(tokenizer, template)}: {report.summary()}; rejected {manifest['rejected_by_reason']}")
    assert report.ok, report.format()
    if manifest["examples_written"]:
        assert report.turns_checked > 0


# ---------------------------------------------------------------------------- the oracle itself


def _set(values: list[int], j: int, value: int) -> list[int]:
    out = list(values)
    out[j] = value
    return out


def mutations(ex: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Corruptions of a correct example (its first trained run starts at `start`, ends before `end`)."""
    ids, labels = list(ex["input_ids"]), list(ex["labels"])
    start = next(j for j, lab in enumerate(labels) if lab != -100)
    end = next((j for j in range(start, len(labels)) if labels[j] == -100), len(labels))
    return {
        "prompt token trained": {**ex, "labels": _set(labels, start - 1, ids[start - 1])},
        "user-side token trained": {**ex, "labels": _set(labels, 2, ids[2])},
        "marker untrained": {**ex, "labels": _set(labels, end - 1, -100)},
        "labels shifted": {**ex, "labels": [*labels[1:], -100]},
        "prompt id changed": {**ex, "input_ids": _set(ids, 1, ids[1] + 1)},
        "turn id changed": {**ex, "input_ids": _set(ids, start, ids[start] + 1)},
        "wrong source line": {**ex, "source_line": ex["source_line"] + 1},
    }


@pytest.mark.parametrize(("tokenizer", "template"), CONFIGS, ids=[config_id(*c) for c in CONFIGS])
def test_oracle_catches_broken_examples(
    tokenizer: str, template: str | None, inputs: dict[str, Path], tmp_path: Path
) -> None:
    """The oracle is not vacuous: every corruption of a correct example is reported."""
    out = tmp_path / "out"
    prepare(inputs["openai_cookbook/toy_chat_fine_tuning.jsonl"], out, tokenizer, template)
    oracle = make_oracle(TOKENIZERS_DIR / tokenizer, template)
    examples = list(iter_output(out))
    assert examples and oracle.check_dir(out).ok
    for what, bad in mutations(examples[0]).items():
        report = Report()
        oracle.check_example(bad, report)
        assert report.failures, f"{what}: not detected"
