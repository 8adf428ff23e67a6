"""`sftprep tokenizer add-tokens`: a copy of a tokenizer with role / separator tokens added as special
tokens (e.g. chatml's `<|im_start|>` / `<|im_end|>` for a Llama 3 or GPT-2 tokenizer, `<|USER|>`,
`<|PAD|>`). The new ids follow the existing ones; `sftprep train` gives them embedding rows
initialised from the mean of the others. `sftprep_tokens.json` in the copy records the source and the
added ids.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer

from sftprep.errors import ConfigError
from sftprep.outdir import check_replaceable, make_staging, out_dir_lock, replace_dir
from sftprep.tokenize.tokenizer import BPETokenizer, default_tokenizer_dir

TOKENS_FILE = "sftprep_tokens.json"
_COPIED = ("special_tokens_map.json", "chat_template.jinja", "chat_template.json", "generation_config.json")
EXPECTED = (TOKENS_FILE, "tokenizer.json", "tokenizer_config.json", *_COPIED)


@dataclass
class AddedTokens:
    out_dir: Path
    added: dict[str, int] = field(default_factory=dict)  # token -> its new id
    present: list[str] = field(default_factory=list)  # asked for, already one token


def template_markers(template: str, tok: BPETokenizer) -> list[str]:
    """The structural markers a template renders (chatml: <|im_start|>, <|im_end|>)."""
    from sftprep.errors import TemplateError
    from sftprep.templates.base import RenderOptions
    from sftprep.templates.loader import load_template

    try:
        loaded = load_template(template, special_tokens=tok.added_tokens)
    except TemplateError as e:
        raise ConfigError(str(e)) from e
    opts = RenderOptions(bos_token=tok.bos_token or "", eos_token=tok.eos_token or "")
    return [m for m in loaded.markers(opts) if m]


def missing_tokens(tok: BPETokenizer, wanted: list[str]) -> tuple[list[str], list[str]]:
    """(tokens to add, tokens already single tokens) among `wanted`, in order, without repeats."""
    add, present = [], []
    for t in dict.fromkeys(wanted):
        if t in tok.added_tokens or len(tok.encode(t)) == 1:
            present.append(t)
        else:
            add.append(t)
    return add, present


def missing_markers_hint(tok: BPETokenizer, template: str, tokenizer_arg: str | None) -> str | None:
    """For `sftprep prepare`: the command that adds the template's markers the tokenizer lacks, or None."""
    try:
        add, _ = missing_tokens(tok, template_markers(template, tok))
    except ConfigError:
        return None
    if not add:
        return None
    src = tokenizer_arg or "default"
    out = f"{Path(src).with_suffix('').name if src != 'default' else 'tokenizer'}-{Path(template).stem}"
    return (
        f"template {template}'s markers {', '.join(add)} are not tokens of this tokenizer (each is encoded as "
        f"several ordinary tokens); to add them as special tokens: sftprep tokenizer add-tokens {src} -o {out} "
        f"--template {template}, then prepare with --tokenizer {out} (sftprep train gives them embedding rows)"
    )


def _source(path: str) -> tuple[Tokenizer, dict[str, Any], Path | None]:
    """(the raw tokenizer, its tokenizer_config.json values, the directory of files to copy along)."""
    p = default_tokenizer_dir() if path in ("default", "") else Path(path)
    if p.suffix == ".tiktoken" and p.is_file():
        from sftprep.tokenize.tiktoken_convert import load_tiktoken

        tok, specials = load_tiktoken(p)
        eos = specials.get("eos")
        return tok, ({"eos_token": eos, "bos_token": eos} if eos else {}), None
    tj = p / "tokenizer.json" if p.is_dir() else p
    if not tj.is_file():
        raise ConfigError(
            f"{path}: no tokenizer.json there; give a tokenizer directory, a tokenizer.json or a .tiktoken file"
        )
    try:
        tok = Tokenizer.from_file(str(tj))
    except Exception as e:  # the Rust error names the problem
        raise ConfigError(f"{tj}: cannot load: {e}") from e
    cfg_path = tj.with_name("tokenizer_config.json")
    config: dict[str, Any] = {}
    if cfg_path.is_file():
        try:
            config = json.loads(cfg_path.read_text("utf-8"))
        except ValueError as e:
            raise ConfigError(f"{cfg_path}: invalid JSON: {e}") from e
    return tok, config, tj.parent


def add_tokens(
    tokenizer: str,
    out_dir: str | Path,
    tokens: list[str],
    template: str | None = None,
    pad_token: str | None = None,
    overwrite: bool = False,
) -> AddedTokens:
    """Write OUT_DIR: the tokenizer with `tokens`, the template's markers and `pad_token` added."""
    if not tokens and not template and not pad_token:
        raise ConfigError("nothing to add: give --token TOKEN (repeatable), --template NAME or --pad-token TOKEN")
    if any(not t or t.strip() != t for t in tokens):
        raise ConfigError(f"--token {tokens}: tokens must be non-empty, without surrounding whitespace")
    if tokenizer not in ("default", "") and not Path(tokenizer).exists():
        raise ConfigError(
            f"TOKENIZER {tokenizer}: no such file or directory; give a tokenizer directory, a tokenizer.json, "
            "a .tiktoken file, or default (the embedded tokenizer)"
        )
    tok = BPETokenizer.load(None if tokenizer in ("default", "") else tokenizer)
    wanted = [*tokens, *(template_markers(template, tok) if template else []), *([pad_token] if pad_token else [])]
    add, present = missing_tokens(tok, wanted)
    raw, config, files_dir = _source(tokenizer)
    out = Path(out_dir)
    if files_dir is not None and out.exists() and out.resolve() == files_dir.resolve():
        raise ConfigError(f"-o {out} is the source tokenizer's directory; write the copy to a new directory")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ConfigError(f"{out} exists; choose another -o, or --overwrite to replace an add-tokens output")
        check_replaceable(out, (TOKENS_FILE,), EXPECTED)
    before = raw.get_vocab_size(with_added_tokens=True)
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in add])
    added = {t: raw.token_to_id(t) for t in add}
    assert all(i is not None and i >= before for i in added.values())
    with out_dir_lock(out, "tokenizer add-tokens"):
        staging = make_staging(out, (TOKENS_FILE,))
        raw.save(str(staging / "tokenizer.json"))
        _write_config(staging, config, added, pad_token)
        if files_dir is not None:
            for name in _COPIED:
                if (files_dir / name).is_file():
                    shutil.copyfile(files_dir / name, staging / name)
            _update_map(staging / "special_tokens_map.json", pad_token)
        record = {"source": str(tokenizer), "source_sha256": tok.sha256, "added": added, "pad_token": pad_token}
        (staging / TOKENS_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", "utf-8")
        replace_dir(staging, out, (TOKENS_FILE,), EXPECTED)
    return AddedTokens(out, added, present)


def _write_config(d: Path, config: dict[str, Any], added: dict[str, int], pad_token: str | None) -> None:
    cfg = dict(config)
    decoder = dict(cfg.get("added_tokens_decoder") or {})
    for t, i in added.items():
        decoder[str(i)] = {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True,
        }  # fmt: skip
    if decoder:
        cfg["added_tokens_decoder"] = decoder
    if pad_token:
        cfg["pad_token"] = pad_token
    cfg.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", "utf-8")


def _update_map(path: Path, pad_token: str | None) -> None:
    if pad_token and path.is_file():
        data = json.loads(path.read_text("utf-8"))
        data["pad_token"] = pad_token
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
