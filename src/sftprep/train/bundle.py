"""The tokenizer and chat template a dataset was prepared with: load them from DATA_DIR's manifest,
save them beside the trained model, and load them back from the model directory."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftprep import __version__
from sftprep.errors import ConfigError
from sftprep.preparation.manifest import Manifest, read_manifest, template_from_record
from sftprep.preparation.options import PrepareOptions
from sftprep.templates.base import ChatTemplate, RenderOptions
from sftprep.tokenize.tokenizer import BPETokenizer

BUNDLE_FILE = "sftprep_model.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "sftprep_tokens.json",  # written by `sftprep tokenizer add-tokens`
)


@dataclass
class DataBundle:
    """What the data was prepared with: its manifest (the typed model of manifest.json, or of the record saved
    beside a model), the tokenizer and the exact template it names."""

    tokenizer: BPETokenizer
    template: ChatTemplate
    manifest: Manifest

    @property
    def tokenizer_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self.manifest.tokenizer)

    @property
    def template_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self.manifest.template)

    @property
    def options(self) -> dict[str, Any]:
        return self.manifest.options

    @property
    def pad_id(self) -> int:
        pad = self.manifest.tokenizer.pad_id
        return int(pad if pad is not None else self.tokenizer.pad_id)

    @property
    def eos_id(self) -> int | None:
        return self.tokenizer.token_to_id(self.manifest.tokenizer.eos_token)

    @property
    def vocab_size(self) -> int:
        return int(self.manifest.tokenizer.vocab_size or self.tokenizer.vocab_size)

    def prepare_options(self, **overrides: Any) -> PrepareOptions:
        return self.manifest.prepare_options(**overrides)

    def render_options(self) -> RenderOptions:
        """The render options the data was prepared with (the prompt at inference is rendered with them)."""
        return self.manifest.render_options(self.tokenizer)


def load_data_bundle(data_dir: str | Path) -> DataBundle:
    """The tokenizer and template recorded in DATA_DIR/manifest.json (Manifest.components)."""
    manifest = read_manifest(data_dir)
    try:
        tok, template = manifest.components()
    except ConfigError as e:
        raise ConfigError(f"{data_dir}: {e}") from e
    return DataBundle(tok, template, manifest)


def save_bundle(bundle: DataBundle, out_dir: Path, extra: dict[str, Any]) -> None:
    """Copy the tokenizer files into OUT_DIR and record the template, options and training run."""
    src = Path(bundle.tokenizer.path)
    if src.is_dir():
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, out_dir / name)
    elif src.suffix == ".tiktoken":
        shutil.copyfile(src, out_dir / src.name)
    else:  # a tokenizer.json under another name
        shutil.copyfile(src, out_dir / "tokenizer.json")
        if (src.parent / "tokenizer_config.json").is_file():
            shutil.copyfile(src.parent / "tokenizer_config.json", out_dir / "tokenizer_config.json")
    record = {
        "sftprep_version": __version__,
        "tokenizer": {**bundle.tokenizer_record, "path": "."},
        "template": bundle.template_record,
        "options": bundle.options,
        **extra,
    }
    (out_dir / BUNDLE_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", "utf-8")


def load_model_bundle(model_dir: str | Path) -> DataBundle:
    """The tokenizer and template saved beside a model by `sftprep train`."""
    path = Path(model_dir) / BUNDLE_FILE
    if not path.is_file():
        raise ConfigError(f"{model_dir}: no {BUNDLE_FILE}; give a directory written by `sftprep train`")
    try:
        record = json.loads(path.read_text("utf-8"))
        record["tokenizer"], record["template"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: unreadable or incomplete ({e}); train the model again with `sftprep train`") from e
    manifest = Manifest.from_dict(record)
    tok = BPETokenizer.load(Path(model_dir))  # the tokenizer files saved beside the model
    if manifest.tokenizer.sha256 and tok.sha256 != manifest.tokenizer.sha256:
        raise ConfigError(f"{model_dir}: its tokenizer files are not the ones the model was trained with (sha256)")
    return DataBundle(tok, template_from_record(dataclasses.asdict(manifest.template), tok), manifest)
