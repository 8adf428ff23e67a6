"""The template part of the health section: what the manifest records about the chat template and tokenizer.

The end-of-turn stop is the one the run derived (recorded in the manifest), so it shows what the run used even
if the template file changed since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sftprep.preparation.manifest import Manifest
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


def template_info(manifest: Manifest, tok: BPETokenizer | None = None) -> TemplateInfo:
    """What the manifest records of the template (its end-of-turn stop, from the run's own probe) and whether
    the recorded tokenizer still loads unchanged here."""
    t, k = manifest.template, manifest.tokenizer
    if tok is None:
        tok = _recorded_tokenizer(manifest)
    marker = t.end_of_turn
    one_token = None
    if tok is not None and marker:
        one_token = tok.token_to_id(marker) is not None
    return TemplateInfo(
        name=t.name,
        sha256=t.sha256,
        kind="built-in spec" if t.text.lstrip().startswith("{") else "jinja",
        end_of_turn=marker,
        eos_token=k.eos_token,
        marker_is_one_token=one_token,
        tokenizer_sha_matches=None if tok is None else tok.sha256 == k.sha256,
        mask=str(manifest.options.get("mask", "assistant")),
        split_conversations=manifest.split_conversations,
        split_for_tokenization=manifest.split_for_tokenization,
        generation_tag_disagreements=manifest.generation_tag_disagreements,
    )


def _recorded_tokenizer(manifest: Manifest) -> BPETokenizer | None:
    """The tokenizer at the recorded path, or None when it cannot be loaded here (changed or gone)."""
    from sftprep.errors import SftprepError
    from sftprep.tokenize.tokenizer import BPETokenizer

    try:
        return BPETokenizer.load(manifest.tokenizer.path)
    except (SftprepError, OSError):
        return None
