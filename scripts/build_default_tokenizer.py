"""Rebuild the embedded default tokenizer (src/sftprep/data/default_tokenizer).

Byte-level BPE, 8,192 ids, trained by `sftprep tokenizer train` over the bundled sample, the demo's
synthetic arithmetic conversations and the Apache-2.0 datasets in ../shared/data/llama_factory and
../shared/data/fastchat, rendered with the built-in chatml template. Run from the project root:

    .venv/bin/python scripts/build_default_tokenizer.py
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from sftprep.tokenize.corpus import train_from_files

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SOURCES = [
    ROOT / "examples" / "sample.jsonl",
    SHARED / "llama_factory" / "alpaca_en_demo.json",
    SHARED / "llama_factory" / "alpaca_zh_demo.json",
    SHARED / "llama_factory" / "glaive_toolcall_en_demo.json",
    SHARED / "llama_factory" / "identity.json",
    SHARED / "fastchat" / "dummy_conversation.json",
]


def arithmetic(path: Path, n: int = 2000) -> Path:
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            a, b = rng.randint(0, 99), rng.randint(0, 99)
            msgs = [{"role": "user", "content": f"What is {a} + {b}?"}, {"role": "assistant", "content": str(a + b)}]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = [str(p) for p in SOURCES if p.exists()] + [str(arithmetic(Path(tmp) / "arith.jsonl"))]
        out = ROOT / "src" / "sftprep" / "data" / "default_tokenizer"
        train_from_files(files, 8192, out, "chatml")
        print(f"wrote {out} from {len(files)} files")


if __name__ == "__main__":
    main()
