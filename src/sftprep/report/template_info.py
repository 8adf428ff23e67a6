"""The template part of the health section: what the manifest records about the chat template and tokenizer.

The end-of-turn marker is derived from the template text stored in the manifest (a built-in spec's
`end_of_turn`, or a probe render of the Jinja source), so it shows what the run used even if the template
file changed since.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sftprep.tokenize.tokenizer import BPETokenizer


@dataclass
class TemplateInfo:
    name: str
    sha256: str
    kind: str  # "built-in spec" | "jinja"
    end_of_turn: str | None
    eos_token: str | None
    marker_is_one_token: bool | None  # None: tokenizer not loadable here
    tokenizer_sha_matches: bool | None
    mask: str
    split_conversations: int
    split_for_tokenization: int
    generation_tag_disagreements: int

    @property
    def prefix_preserving(self) -> bool:
        """True when every conversation rendered as one example (no per-turn split was forced)."""
        return self.split_conversations == 0 and self.split_for_tokenization == 0

    def prefix_detail(self) -> str:
        if self.prefix_preserving:
            return "yes: every conversation is one example (no per-turn split needed)"
        parts = []
        if self.split_conversations:
            why = "--mask split-turns" if self.mask == "split-turns" else "the template does not preserve prefixes"
            parts.append(f"{self.split_conversations} conversation(s) split per turn ({why})")
        if self.split_for_tokenization:
            parts.append(f"{self.split_for_tokenization} split per turn because joint tokenization differed")
        return "; ".join(parts)


def template_info(manifest: dict[str, Any], tok: BPETokenizer | None = None) -> TemplateInfo:
    t, k = manifest["template"], manifest["tokenizer"]
    if tok is None:
        tok = load_recorded_tokenizer(manifest)
    text = t.get("text") or ""
    spec = _spec_fields(text)
    bos, eos = k.get("bos_token") or "", k.get("eos_token") or ""
    if spec is not None:
        marker = _fill(str(spec.get("end_of_turn") or ""), bos, eos) or None
    else:
        marker = _jinja_marker(text, t.get("name", "jinja"), tok, bos, eos)
    one_token = None
    if tok is not None and marker:
        one_token = len(tok.encode(marker)) == 1
    return TemplateInfo(
        name=t.get("name", "?"),
        sha256=t.get("sha256", ""),
        kind="built-in spec" if spec is not None else "jinja",
        end_of_turn=marker,
        eos_token=k.get("eos_token"),
        marker_is_one_token=one_token,
        tokenizer_sha_matches=None if tok is None else tok.sha256 == k.get("sha256"),
        mask=manifest.get("options", {}).get("mask", "assistant"),
        split_conversations=int(manifest.get("split_conversations", 0)),
        split_for_tokenization=int(manifest.get("split_for_tokenization", 0)),
        generation_tag_disagreements=int(manifest.get("generation_tag_disagreements", 0)),
    )


def load_recorded_tokenizer(manifest: dict[str, Any]) -> BPETokenizer | None:
    """The tokenizer recorded in the manifest, or None when it cannot be loaded here."""
    from sftprep.errors import SftprepError
    from sftprep.tokenize.tokenizer import BPETokenizer

    try:
        return BPETokenizer.load(manifest["tokenizer"]["path"])
    except (SftprepError, OSError, KeyError):
        return None


def _spec_fields(text: str) -> dict[str, Any] | None:
    """A built-in spec's fields when the recorded template text is one (JSON), else None."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and "end_of_turn" in data else None


def _fill(fmt: str, bos: str, eos: str) -> str:
    return fmt.replace("{bos}", bos).replace("{eos}", eos)


def _jinja_marker(text: str, name: str, tok: BPETokenizer | None, bos: str, eos: str) -> str | None:
    from sftprep.templates.base import RenderOptions
    from sftprep.templates.jinja_template import JinjaTemplate

    specials = tok.added_tokens if tok is not None else ()
    try:
        template = JinjaTemplate(text, name=name, special_tokens=specials)
        return template.end_of_turn(RenderOptions(bos_token=bos, eos_token=eos))
    except Exception:  # a template that cannot even be probed: report "unknown", never fail the report
        return None
