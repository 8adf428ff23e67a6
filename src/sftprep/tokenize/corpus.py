"""`sftprep tokenizer train`: byte-level BPE over rendered conversations, template markers as specials."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from sftprep.errors import ConfigError, NoExamplesError, TemplateError
from sftprep.outdir import (
    check_replaceable,
    make_staging,
    normalized,
    out_dir_lock,
    remove_staging,
    replace_dir,
)
from sftprep.read.normalize_conversations import normalize_conversations
from sftprep.read.records import iter_input_files, read_records
from sftprep.templates.base import RenderOptions
from sftprep.templates.spec import SpecTemplate, builtin_specs
from sftprep.tokenize.train_bpe import save_tokenizer_dir, train_bpe
from sftprep.types import Reject

PAD = "<|endoftext|>"


def special_tokens_for(spec_name: str) -> tuple[RenderOptions, list[str]]:
    """The bos/eos a built-in template needs and every marker it renders, as special tokens."""
    if spec_name not in builtin_specs():
        raise TemplateError(f"--template {spec_name!r}: expected a built-in ({', '.join(sorted(builtin_specs()))})")
    spec = builtin_specs()[spec_name]
    uses = " ".join(str(v) for v in spec.__dict__.values())
    bos = "<s>" if "{bos}" in uses else ""
    eos = "</s>" if "{eos}" in spec.end_of_turn or not spec.end_of_turn else spec.end_of_turn
    opts = RenderOptions(bos_token=bos, eos_token=eos)
    specials = [PAD, *(t for t in (bos, eos) if t), *SpecTemplate(spec).markers(opts)]
    return opts, list(dict.fromkeys(specials))


def rendered_texts(
    files: list[str], template: SpecTemplate, opts: RenderOptions, counted: list[int] | None = None
) -> Iterator[str]:
    """The rendered texts of every conversation in `files`; `counted` gets [records read, rendered]."""
    counted = counted if counted is not None else [0, 0]
    for path in iter_input_files(files):
        for raw in read_records(path):
            counted[0] += 1
            conv = normalize_conversations(raw)
            if isinstance(conv, Reject):
                continue
            rendered = template.render(conv, opts)
            if not isinstance(rendered, Reject):
                counted[1] += 1
                yield from (r.text for r in rendered)


MARKERS = ("tokenizer_config.json",)  # with a `sftprep_template` key: a directory `tokenizer train` wrote
WRITTEN = ("tokenizer.json", "tokenizer_config.json")


def check_tokenizer_target(path: Path) -> None:
    """`-o` may be new, empty, or a tokenizer directory this command wrote; anything else is refused."""
    check_replaceable(path, MARKERS, WRITTEN)
    cfg = path / "tokenizer_config.json"
    if cfg.is_file():
        try:
            ours = "sftprep_template" in json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise ConfigError(
                f"{path} holds a tokenizer that `sftprep tokenizer train` did not write (its tokenizer_config.json "
                "has no sftprep_template); it will not be replaced: choose another -o"
            )


def train_from_files(files: list[str], vocab_size: int, out_dir: Path, template: str, min_frequency: int = 2) -> Path:
    """Train on the rendered conversations of `files` and write the tokenizer directory `out_dir` (replacing
    only one this command wrote; one writer at a time). NoExamplesError (exit 3) when nothing renders."""
    final = normalized(out_dir)
    check_tokenizer_target(final)
    iter_input_files(files)
    opts, specials = special_tokens_for(template)
    spec_template = SpecTemplate(builtin_specs()[template])
    with out_dir_lock(final, "tokenizer train"):
        check_tokenizer_target(final)
        counted = [0, 0]  # records read, conversations rendered
        tok = train_bpe(rendered_texts(files, spec_template, opts, counted), vocab_size, specials, min_frequency)
        if not counted[1]:
            raise NoExamplesError(
                f"nothing to train on: none of the {counted[0]} records in {', '.join(files)} is a conversation "
                f"the {template} template renders (sftprep prepare ... shows why each is rejected)"
            )
        staging = make_staging(final, MARKERS)
        try:
            save_tokenizer_dir(
                tok,
                staging,
                bos_token=opts.bos_token or None,
                eos_token=opts.eos_token,
                pad_token=PAD,
                template_name=template,
            )
        except BaseException:
            remove_staging(staging)
            raise
        replace_dir(staging, final, MARKERS, WRITTEN)
    return Path(out_dir)
