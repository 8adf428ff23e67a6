"""Prepare the agentic corpus with sftprep for one template and check it (used by the test and the report).

`cases()` lists every template in ../shared/templates/{axolotl,chujiezheng,trl} (not the `*_training` variants)
and the tokenizers' own templates; `run_case` prepares and checks one; `compare_trl` compares the reference with
TRL's `{% generation %}` variant where there is one (informative: TRL makes its own choices).
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentic_convert import NotConvertible, to_hf
from agentic_oracle import Checker, TemplateReport, read_records
from agentic_reference import SHARED, RefError, fitted_tokenizer, snippet, training_template, trl_spans

OWN_TOKENIZERS = ("qwen2.5", "llama3", "phi-3-mini", "minimind")


@dataclass(frozen=True)
class Case:
    name: str  # "trl/qwen3" or "own/qwen2.5"
    template: Path | None  # a .jinja file, or None for the tokenizer's own template
    tokenizer: Path | None  # None: fitted to the template at run time


def cases(pattern: str = "*") -> list[Case]:
    out = []
    for path in sorted((SHARED / "templates").glob("*/*.jinja")):
        if not path.stem.endswith("_training"):
            out.append(Case(f"{path.parent.name}/{path.stem}", path, None))
    out += [Case(f"own/{t}", None, SHARED / "tokenizers" / t) for t in OWN_TOKENIZERS]
    return [c for c in out if fnmatch.fnmatch(c.name, pattern)]


def tokenizer_for(case: Case, cache_dir: Path) -> Path:
    if case.tokenizer is not None:
        return case.tokenizer
    assert case.template is not None
    return fitted_tokenizer(case.template, cache_dir)


def run_case(case: Case, corpus: Path, work_dir: Path, cache_dir: Path, **options: Any) -> TemplateReport:
    """sftprep.prepare(corpus) with this template, then the checker; a crash of prepare is reported, not raised."""
    import sftprep

    tok_dir = tokenizer_for(case, cache_dir)
    out = work_dir / case.name.replace("/", "__")
    shutil.rmtree(out, ignore_errors=True)
    template = str(case.template) if case.template else None
    try:
        sftprep.prepare([str(corpus)], out_dir=str(out), tokenizer=str(tok_dir), template=template, **options)
    except Exception as e:
        rep = TemplateReport(case.name)
        frames = traceback.extract_tb(e.__traceback__)
        at = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        rep.crash = f"{type(e).__name__} at {at}: {str(e)[:300]}"
        return rep
    checker = Checker(tok_dir, case.template or tok_dir)
    return checker.check_dir(out, corpus, case.name)


@dataclass
class TrlComparison:
    turns: int = 0  # turns both render (TRL's full render, our per-turn reference under V = {})
    agree: int = 0
    whitespace: int = 0  # the same but for whitespace after the stop (TRL trains chatml's "\n" after <|im_end|>)
    raised: int = 0  # records TRL's training template could not render
    first: str = ""  # the first disagreement beyond whitespace

    def summary(self) -> str:
        text = f"{self.agree}/{self.turns} turns agree, {self.whitespace} but for whitespace after the stop"
        return text + (f", {self.raised} records raised" if self.raised else "")


def compare_trl(case: Case, corpus: Path, cache_dir: Path) -> TrlComparison | None:
    """Our trained text per turn vs the span TRL's `*_training.jinja` marks (return_assistant_tokens_mask)."""
    train = training_template(case.template)
    if train is None:
        return None
    checker = Checker(tokenizer_for(case, cache_dir), case.template)
    ref, source, cmp = checker.ref, train.read_text(encoding="utf-8"), TrlComparison()
    for line, record in read_records(corpus).items():
        try:
            hf = to_hf(record)
        except NotConvertible:
            continue
        turns = hf.trainable_turns()
        if len(turns) != len(hf.assistant_turns()) or ref.spells_special(hf.messages):
            continue  # TRL trains every assistant turn; weights would make the comparison meaningless
        try:
            ours = [ref.decode(ref.encode(ref.turn(hf.messages, hf.tools, i, {}).text)) for i in turns]
        except RefError:
            continue
        try:
            theirs = trl_spans(ref, source, hf.messages, hf.tools)
        except Exception:
            cmp.raised += 1
            continue
        cmp.turns += len(ours)
        same = len(ours) == len(theirs)
        cmp.agree += sum(a == b for a, b in zip(ours, theirs)) if same else 0
        cmp.whitespace += sum(a != b and a.rstrip() == b.rstrip() for a, b in zip(ours, theirs)) if same else 0
        if not cmp.first and [a.rstrip() for a in ours] != [b.rstrip() for b in theirs]:
            pairs = enumerate(zip(ours, theirs))
            k = next((k for k, (a, b) in pairs if a.rstrip() != b.rstrip()), min(len(ours), len(theirs)))
            mine = snippet(ours[k]) if k < len(ours) else "-"
            trl = snippet(theirs[k]) if k < len(theirs) else "-"
            cmp.first = f"line {line} turn {k} ({len(ours)} vs {len(theirs)} spans): ours {mine}\n      TRL  {trl}"
    return cmp


def to_json(rep: TemplateReport) -> dict[str, Any]:
    d = {k: v for k, v in vars(rep).items() if k != "failures"}
    d["wrong"], d["failures"] = rep.wrong, [str(f) for f in rep.failures]
    return json.loads(json.dumps(d, default=dict))
