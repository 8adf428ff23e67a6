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
from sftprep.api import read_manifest
from sftprep.errors import ConfigError
from sftprep.preparation.options import PrepareOptions
from sftprep.templates.base import ChatTemplate, RenderOptions, template_sha256
from sftprep.templates.jinja_template import JinjaTemplate
from sftprep.templates.spec import SpecTemplate, TemplateSpec
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
    """What the data was prepared with (the manifest's tokenizer, template and options sections)."""

    tokenizer: BPETokenizer
    template: ChatTemplate
    tokenizer_record: dict[str, Any]
    template_record: dict[str, Any]
    options: dict[str, Any]

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer_record.get("pad_id", self.tokenizer.pad_id))

    @property
    def eos_id(self) -> int | None:
        return self.tokenizer.token_to_id(self.tokenizer_record.get("eos_token"))

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer_record.get("vocab_size", self.tokenizer.vocab_size))

    def prepare_options(self, **overrides: Any) -> PrepareOptions:
        known = {f.name for f in dataclasses.fields(PrepareOptions)}
        values = {k: v for k, v in self.options.items() if k in known}
        values.setdefault("inputs", [])
        return PrepareOptions(**{**values, **overrides})

    def render_options(self) -> RenderOptions:
        o = self.prepare_options()
        return RenderOptions(
            bos_token=self.tokenizer_record.get("bos_token") or "",
            eos_token=self.tokenizer_record.get("eos_token") or "",
            train_on_eos=o.train_on_eos,
            train_reasoning=o.train_reasoning,
            train_tool_calls=o.train_tool_calls,
            template_vars=o.template_vars,
        )


def template_from_record(record: dict[str, Any], tok: BPETokenizer) -> ChatTemplate:
    """Rebuild the exact template from the manifest's {name, sha256, text} (no lookup by name)."""
    text, name = record["text"], record.get("name", "template")
    template: ChatTemplate
    spec = _as_spec(text)
    if spec is not None:
        template = SpecTemplate(spec)
    else:
        template = JinjaTemplate(text, name=name, special_tokens=tok.added_tokens)
    if record.get("sha256") and template_sha256(template) != record["sha256"]:
        raise ConfigError(f"template {name!r}: its text does not match the recorded sha256")
    return template


def _as_spec(text: str) -> TemplateSpec | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    known = {f.name for f in dataclasses.fields(TemplateSpec)}
    if not isinstance(data, dict) or "name" not in data or not set(data) <= known:
        return None
    return TemplateSpec(**{**data, "markers": tuple(data.get("markers", ()))})


def _bundle_from(tok: BPETokenizer, manifest: dict[str, Any], where: str) -> DataBundle:
    record = manifest["tokenizer"]
    if record.get("sha256") and tok.sha256 != record["sha256"]:
        raise ConfigError(
            f"{where}: the tokenizer at {tok.path} is not the one the data was prepared with (sha256 differs)"
        )
    template = template_from_record(manifest["template"], tok)
    return DataBundle(tok, template, dict(record), dict(manifest["template"]), dict(manifest.get("options", {})))


def load_data_bundle(data_dir: str | Path) -> DataBundle:
    """The tokenizer and template recorded in DATA_DIR/manifest.json."""
    manifest = read_manifest(data_dir)
    record = manifest["tokenizer"]
    try:
        tok = BPETokenizer.load(record["path"])
    except ConfigError as e:
        tok = BPETokenizer.load(None)  # the embedded default, if that is what it was (an installation moved)
        if tok.sha256 != record.get("sha256"):
            raise ConfigError(f"{data_dir}: cannot load the tokenizer recorded in its manifest: {e}") from e
    return _bundle_from(tok, manifest, str(data_dir))


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
    return _bundle_from(BPETokenizer.load(Path(model_dir)), record, str(model_dir))
