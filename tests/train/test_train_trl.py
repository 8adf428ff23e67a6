"""Interop: TRL's SFTTrainer trains on a prepared DATA_DIR loaded with datasets, unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
trl = pytest.importorskip("trl", reason="trl is not installed (pip install trl)")

from train_helpers import TINY, addition_records, prepare_records  # noqa: E402

import sftprep  # noqa: E402
from sftprep.api import read_manifest, shard_paths  # noqa: E402
from sftprep.tokenize.tokenizer import default_tokenizer_dir  # noqa: E402
from sftprep.train.data import TrainExample, collate_padded, shift_labels  # noqa: E402
from sftprep.train.loss import SFTLoss  # noqa: E402
from sftprep.train.model import tiny_llama  # noqa: E402


@pytest.mark.filterwarnings("ignore::FutureWarning")  # raised inside TRL's SFTConfig
def test_sft_trainer_uses_our_labels_and_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from transformers import AutoTokenizer

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    data = prepare_records(tmp_path, addition_records(24))
    files = [str(p) for p in shard_paths(data)]
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    assert {"input_ids", "labels"} <= set(ds.column_names) and len(ds) == 24

    manifest = read_manifest(data)["tokenizer"]
    tok = AutoTokenizer.from_pretrained(str(default_tokenizer_dir()))
    model = tiny_llama(manifest["vocab_size"], TINY, manifest["pad_id"], tok.eos_token_id, seed=0)
    args = trl.SFTConfig(
        output_dir=str(tmp_path / "trl"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)

    # preparation keeps our rows as they are (no re-tokenisation, no new labels)
    kept = trainer.train_dataset
    assert kept["input_ids"] == ds["input_ids"] and kept["labels"] == ds["labels"]
    # the collator pads our labels, it does not rebuild them
    rows = [ds[i] for i in range(3)]
    batch = trainer.data_collator([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    ours = sftprep.collate(rows, pad_id=manifest["pad_id"], return_tensors="pt")
    assert batch["labels"].tolist() == ours["labels"].tolist()
    assert batch["input_ids"].tolist() == ours["input_ids"].tolist()

    # HF's shifted mean loss on that batch == our head-gathered sum / trained tokens
    examples = [TrainExample(np.array(r["input_ids"]), shift_labels(np.array(r["labels"]))) for r in rows]
    padded = collate_padded(examples, manifest["pad_id"])
    with torch.no_grad():
        hf = model(input_ids=ours["input_ids"], attention_mask=ours["attention_mask"], labels=ours["labels"]).loss
        mine = SFTLoss(model)(**padded.tensors()) / padded.n_trainable
    assert torch.allclose(hf, mine, rtol=1e-5)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(0 < x < 20 for x in losses)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
