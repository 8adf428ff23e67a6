"""`sftprep tokenizer train`: byte-level BPE over rendered conversations, template markers as specials."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sftprep.errors import TemplateError
from sftprep.normalize_conversations import normalize_conversations
from sftprep.records import iter_input_files, read_records
from sftprep.templates.base import RenderOptions
from sftprep.templates.spec import SpecTemplate, builtin_specs
from sftprep.tokenizer_train import save_tokenizer_dir, train_bpe
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


def rendered_texts(files: list[str], template: SpecTemplate, opts: RenderOptions) -> Iterator[str]:
    for path in iter_input_files(files):
        for raw in read_records(path):
            conv = normalize_conversations(raw)
            if isinstance(conv, Reject):
                continue
            rendered = template.render(conv, opts)
            if not isinstance(rendered, Reject):
                yield from (r.text for r in rendered)


def train_from_files(files: list[str], vocab_size: int, out_dir: Path, template: str, min_frequency: int = 2) -> Path:
    opts, specials = special_tokens_for(template)
    spec_template = SpecTemplate(builtin_specs()[template])
    tok = train_bpe(rendered_texts(files, spec_template, opts), vocab_size, specials, min_frequency)
    return save_tokenizer_dir(
        tok,
        out_dir,
        bos_token=opts.bos_token or None,
        eos_token=opts.eos_token,
        pad_token=PAD,
        template_name=template,
    )
