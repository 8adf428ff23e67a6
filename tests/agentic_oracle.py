"""Independent checker of sftprep output on agentic conversations (issue #18), per template.

Every example is compared with the reference (agentic_reference.Reference: transformers' rendering, this
project's hand-made stop table, our own record converter agentic_convert.to_hf, never sftprep's code):
  invariant 2: ids before the run of trained turn i == encode(P_i) (add_special_tokens=False), P_i rendered with
               the example's `template_vars` (JSON object; a missing column is {});
  invariant 1: the run == T_i, and no other position is trained;
  invariant 3: every input record is written or rejected (with a reason and a message), never both; no example
               has zero trained tokens.
Turns transformers renders that sftprep neither trained nor rejected are `lost`. Examples whose context spells a
special token in message text (sftprep encodes it as plain text) are counted apart, not checked.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from agentic_convert import HFRecord, NotConvertible, to_hf
from agentic_reference import Reference, RefError, TurnRef, common_prefix_len, load_tokenizer, snippet
from agentic_stops import stop_for

IGNORE = -100
# Template variables a product may set to render a record inference-consistently (tried for rejected records)
CANDIDATE_VARS: dict[str, tuple[Any, ...]] = {
    "enable_thinking": (True, False),
    "truncate_history_thinking": (False,),
    "preserve_thinking": (True,),
}
END_OF_TEXT = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>", "<eos>")
REF_CLASSES = {"prefix": "prefix_mismatch_emitted", "render": "unrenderable_emitted"}


@dataclass
class Failure:
    where: str
    turn: int  # assistant message index in the converted record
    kind: str  # failure class
    expected: str
    got: str

    def __str__(self) -> str:
        return f"{self.where} msg {self.turn} [{self.kind}]\n    expected: {self.expected}\n    got:      {self.got}"


@dataclass
class TemplateReport:
    template: str
    records: int = 0
    turns_rendered: int = 0  # trainable turns transformers renders (V = {})
    turns_consistent: int = 0  # ... whose R_i starts with P_i (V = {})
    examples: int = 0
    turns_trained: int = 0
    exact: int = 0
    skipped_special: int = 0
    lost: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=lambda: {"plain": [0, 0], "agentic": [0, 0]})
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> records
    rejected_turns: Counter[str] = field(default_factory=Counter)  # reason -> single turns dropped
    # rejected records whose every trainable turn renders inference-consistently under some candidate V
    rejected_renderable: Counter[str] = field(default_factory=Counter)
    rejects: int = 0  # lines in rejects.jsonl (records and single turns)
    reject_problems: list[str] = field(default_factory=list)  # rejects without a reason or a message
    reconciliation: list[str] = field(default_factory=list)
    classes: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    crash: str | None = None

    @property
    def wrong(self) -> int:
        return self.turns_trained - self.exact - self.skipped_special

    @property
    def ok(self) -> bool:
        return not (self.crash or self.wrong or self.reconciliation or self.reject_problems or self.lost)

    def fail(self, f: Failure, limit: int = 25) -> None:
        self.classes[f.kind] += 1
        if len(self.failures) < limit:
            self.failures.append(f)

    def summary(self) -> str:
        if self.crash:
            return f"{self.template}: CRASH {self.crash}"
        rej = ", ".join(f"{k} {v}" for k, v in self.rejected.most_common()) or "none"
        return (
            f"{self.template}: {self.records} records, {self.turns_rendered} turns rendered, {self.turns_trained} "
            f"trained, {self.exact} exact, {self.wrong} wrong, {self.lost} lost, {self.skipped_special} skipped "
            f"(special text); rejected: {rej}; {self.rejects - len(self.reject_problems)}/{self.rejects} rejects "
            f"have a reason and a message; classes: {dict(self.classes)}"
        )

    def format(self, limit: int = 8) -> str:
        lines = [self.summary(), *self.reconciliation, *self.reject_problems[:5]]
        return "\n".join(lines + [str(f) for f in self.failures[:limit]])


def read_records(path: str | Path) -> dict[int, Any]:
    """{1-based line: parsed JSON (None when it does not parse)} of a JSONL file."""
    out: dict[int, Any] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if line.strip():
            try:
                out[n] = json.loads(line)
            except ValueError:
                out[n] = None
    return out


def read_output(out_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    manifest = json.loads((out_dir / "manifest.json").read_text("utf-8"))
    shards = manifest.get("shards") or sorted(p.name for p in out_dir.glob("data-*.parquet"))
    rows = [r for name in shards for r in pq.read_table(out_dir / name).to_pylist()]
    text = (out_dir / "rejects.jsonl").read_text("utf-8") if (out_dir / "rejects.jsonl").exists() else ""
    return rows, [json.loads(x) for x in text.split("\n") if x.strip()], manifest


def trained_runs(labels: list[int]) -> list[tuple[int, int]]:
    on = [False, *(v != IGNORE for v in labels), False]
    edges = [j for j in range(len(on) - 1) if on[j] != on[j + 1]]
    return list(zip(edges[::2], edges[1::2]))


class Checker:
    """Checks one sftprep output directory prepared from `input_path` with a tokenizer and template."""

    def __init__(self, tokenizer_dir: str | Path, template: str | Path | None) -> None:
        tok = load_tokenizer(str(tokenizer_dir))
        source = Path(template).read_text(encoding="utf-8") if template and str(template).endswith(".jinja") else None
        self.key_path = template if template and str(template).endswith(".jinja") else tokenizer_dir
        self.ref = Reference(tok, source, stop_for(self.key_path))
        # End-of-text tokens: the tokenizer's eos and the usual end-of-document specials it has
        names = {str(tok.eos_token or "")} | set(END_OF_TEXT)
        special = {t.content: i for i, t in tok.added_tokens_decoder.items() if t.special}
        self.eos_ids = {special[n]: n for n in names if n in special}
        self.special_ids = frozenset(special.values())

    # ------------------------------------------------------------------------------------------ one turn

    def expect(self, hf: HFRecord, i: int, v: dict[str, Any]) -> tuple[list[int], list[list[int]], TurnRef]:
        """(prompt ids, accepted run ids, reference) of assistant message i: the turn encoded on its own, or as
        the tail of encode(P_i + T_i) when that keeps the prompt's ids (SentencePiece: encoded in context)."""
        ref = self.ref.turn(hf.messages, hf.tools, i, v)
        pids = self.ref.encode(ref.prompt)
        options = [self.ref.encode(ref.text)]
        joint = self.ref.encode(ref.prompt + ref.text)
        if joint[: len(pids)] == pids and joint[len(pids) :] not in options:
            options.append(joint[len(pids) :])
        return pids, options, ref

    def classify(self, hf: HFRecord, i: int, ids: list[int], region: list[int], ref: TurnRef, a: int, b: int) -> str:
        """The failure class of turn i (span [a, b)) whose ids are right but whose trained positions differ."""
        inside = [k for k in region if a <= k < b]
        before, after = [ids[k] for k in region if k < a], [ids[k] for k in region if k >= b]
        if not region:
            return "tool_calls_untrained" if hf.messages[i].get("tool_calls") else "turn_untrained"
        if before:
            return self._text_class(hf.messages[:i], self.ref.decode(before)) or "context_trained"
        if after:
            text = self.ref.decode(after)
            eos = [self.eos_ids[t] for t in after if t in self.eos_ids]
            if eos:
                return "end_of_conversation_eos_trained" if eos[0] in ref.after else "eos_appended"
            if not text.strip():
                return "whitespace_after_stop_trained"
            if all(t in self.special_ids for t in after[:2]):
                return "next_header_trained"
            return self._text_class(hf.messages[i + 1 :], text) or "trained_past_stop"
        if b - 1 not in inside:
            return "stop_token_untrained"
        return "turn_start_untrained" if a not in inside else "turn_partly_untrained"

    @staticmethod
    def _text_class(messages: list[dict[str, Any]], text: str) -> str | None:
        """ "tool_text_trained" etc. when `text` holds (the start of) some message's text of that role."""
        for role in ("tool", "user", "system"):
            texts = [str(m.get("content") or "").strip() for m in messages if m["role"] == role]
            if any(t and (t[:24] in text or (len(text.strip()) > 2 and text.strip() in t)) for t in texts):
                return f"{role}_text_trained"
        return None

    def check_example(self, row: dict[str, Any], hf: HFRecord, targets: list[int], rep: TemplateReport) -> None:
        where, ids, labels = f"line {row['source_line']}", list(row["input_ids"]), list(row["labels"])
        kind = "agentic" if hf.agentic else "plain"
        v = row.get("template_vars") or {}
        v = json.loads(v) if isinstance(v, str) else dict(v)
        rep.turns_trained += len(targets)
        if len(ids) != len(labels):
            return self._fail_all(rep, where, targets, -1, "labels_not_ids", f"{len(ids)} labels", str(len(labels)))
        if not any(lab != IGNORE for lab in labels):
            rep.reconciliation.append(f"{where} turn {row['turn']}: an example with zero trained tokens")
        if self.ref.spells_special(hf.messages[: max(targets, default=0) + 1]):
            rep.skipped_special += len(targets)
            return
        rep.by_kind[kind][0] += len(targets)
        spans: list[tuple[int, int, TurnRef]] = []
        for i in targets:
            try:
                pids, options, ref = self.expect(hf, i, v)
            except RefError as e:
                cls = REF_CLASSES.get(e.kind, "no_stop_in_render")
                return self._fail_all(rep, where, targets, i, cls, f"a refusal or other template_vars ({v})", e.detail)
            if ids[: len(pids)] != pids:
                at = common_prefix_len(pids, ids)
                exp, got = self._around(pids, at), self._around(ids[: len(pids) + 8], at)
                return self._fail_all(rep, where, targets, i, "prompt_ids_differ", exp, got)
            run = next((o for o in options if ids[len(pids) : len(pids) + len(o)] == o), None)
            if run is None:
                want = options[-1]
                got = ids[len(pids) : len(pids) + len(want) + 4]
                at = common_prefix_len(want, got)
                cls = "stop_token_absent" if at == len(want) - 1 or at == len(got) else "turn_ids_differ"
                if at == len(want) - 1 and at < len(got) and got[at] in self.special_ids:
                    cls = (
                        "eos_appended"
                        if got[at] in self.eos_ids and self.eos_ids[got[at]] not in ref.text
                        else "wrong_end_token"
                    )
                a = e = len(pids)
                while e < len(labels) and labels[e] != IGNORE:
                    e += 1
                if e > a and self.ref.decode(ids[a:e]) == ref.text:
                    cls = "same_text_other_tokens"  # the trained run spells T_i, tokenized otherwise
                return self._fail_all(rep, where, targets, i, cls, self._around(want, at), self._around(got, at))
            spans.append((len(pids), len(pids) + len(run), ref))
        # Turn n owns [its start, the next turn's start) (the first one also what precedes it): trained tokens
        # after its stop, such as a tool result or the next header, count against it.
        trained = [lab != IGNORE for lab in labels]
        bounds = [s for s, _, _ in spans[1:]] + [len(ids)]
        for n, (i, (a, b, ref)) in enumerate(zip(targets, spans)):
            region = [k for k in range(0 if n == 0 else a, bounds[n]) if trained[k]]
            if region == list(range(a, b)) and any(labels[k] != ids[k] for k in region):
                rep.fail(Failure(where, i, "labels_not_ids", "labels == input_ids where trained", "a label differs"))
            elif region == list(range(a, b)):
                rep.exact += 1
                rep.by_kind[kind][1] += 1
            else:
                cls = self.classify(hf, i, ids, region, ref, a, b)
                exp, got_text = self.ref.decode(ids[a:b]), self.ref.decode([ids[k] for k in region])
                rep.fail(Failure(where, i, cls, snippet(exp), snippet(got_text)))

    def _fail_all(self, rep: TemplateReport, where: str, targets: list[int], i: int, cls: str, e: str, g: str) -> None:
        rep.fail(Failure(where, i, cls, e, g))
        rep.classes[cls] += len(targets) - 1  # the example's other turns are not exact either

    def _around(self, ids: list[int], at: int) -> str:
        near = ids[max(0, at - 6) : at + 8]
        return f"{len(ids)} ids, at {at}: {snippet(self.ref.decode(near), 120)} {near}"

    # ------------------------------------------------------------------------------------------ one directory

    def renderable_under_some_v(self, hf: HFRecord) -> bool:
        """Every trainable turn has a T_i under one of the template's candidate variables (CANDIDATE_VARS)."""
        source = self.ref.source or str(getattr(self.ref.tok, "chat_template", "") or "")
        names = [name for name in CANDIDATE_VARS if name in source]
        candidates = [{}] + [{n: value} for n in names for value in CANDIDATE_VARS[n]]
        candidates += [{"enable_thinking": True, n: CANDIDATE_VARS[n][0]} for n in names if n != "enable_thinking"]

        def ok(i: int, v: dict[str, Any]) -> bool:
            try:
                self.ref.turn(hf.messages, hf.tools, i, v)
                return True
            except RefError:
                return False

        turns = hf.trainable_turns()
        return bool(turns) and all(any(ok(i, v) for v in candidates) for i in turns)

    def rendered_turns(self, hf: HFRecord) -> tuple[int, int]:
        """(trainable turns transformers renders, of which inference-consistent) under V = {}."""
        rendered = consistent = 0
        for i in hf.trainable_turns():
            try:
                self.ref.turn(hf.messages, hf.tools, i, {})
                rendered, consistent = rendered + 1, consistent + 1
            except RefError as e:
                rendered += e.kind != "render"
        return rendered, consistent

    def check_dir(self, out_dir: str | Path, input_path: str | Path, name: str = "") -> TemplateReport:
        rep = TemplateReport(name or str(self.key_path))
        records = read_records(input_path)
        rows, rejects, manifest = read_output(Path(out_dir))
        rep.records, rep.examples = len(records), len(rows)
        written: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            written.setdefault(int(row["source_line"]), []).append(row)
        rejected: dict[int, dict[str, Any]] = {}
        turn_rejects: dict[int, set[int]] = {}
        rep.rejects = len(rejects)
        for r in rejects:
            if not r.get("reason") or not r.get("message"):
                rep.reject_problems.append(f"reject without a reason or message: {snippet(json.dumps(r), 200)}")
            line = int(r.get("source_line", r.get("line", -1)))
            if r.get("turn") is not None:
                turn_rejects.setdefault(line, set()).add(int(r["turn"]))
                rep.rejected_turns[str(r.get("reason"))] += 1
            elif line in rejected:
                rep.reconciliation.append(f"line {line} rejected twice")
            else:
                rejected[line] = r
        both = sorted(set(written) & set(rejected))
        missing = sorted(set(records) - set(written) - set(rejected))
        unknown = sorted((set(written) | set(rejected)) - set(records))
        rep.reconciliation += [f"written and rejected: lines {both[:8]}"] * bool(both)
        rep.reconciliation += [f"neither written nor rejected: lines {missing[:8]}"] * bool(missing)
        rep.reconciliation += [f"unknown source lines: {unknown[:8]}"] * bool(unknown)
        if manifest.get("records_read") not in (None, len(records)):
            rep.reconciliation.append(f"manifest records_read {manifest['records_read']} != {len(records)}")
        # --reasoning-mode non-thinking documents that every message's reasoning is left out before rendering
        no_reasoning = (manifest.get("options") or {}).get("reasoning_mode") == "non-thinking"
        for line, record in records.items():
            try:
                hf = to_hf(record)
            except NotConvertible:
                continue  # not a conversation for this converter: only reconciliation applies
            if no_reasoning:
                drop = ("reasoning_content", "reasoning", "thinking")
                hf.messages = [{k: v for k, v in m.items() if k not in drop} for m in hf.messages]
            rendered, consistent = self.rendered_turns(hf)
            rep.turns_rendered += rendered
            rep.turns_consistent += consistent
            if line in rejected:
                reason = str(rejected[line].get("reason"))
                rep.rejected[reason] += 1
                if self.renderable_under_some_v(hf):
                    rep.rejected_renderable[reason] += 1
                continue
            dropped = turn_rejects.get(line, set())
            assistants = hf.assistant_turns()
            covered: set[int] = set()
            for row in written.get(line, []):
                k = int(row["turn"])
                if k >= len(assistants):
                    rep.fail(Failure(f"line {line}", k, "unknown_turn", f"< {len(assistants)} turns", str(k)))
                    continue
                ks = [k] if k >= 0 else [j for j, i in enumerate(assistants) if hf.weights[i] != 0 and j not in dropped]
                covered |= set(ks)
                self.check_example(row, hf, [assistants[j] for j in ks], rep)
            want = {j for j, i in enumerate(assistants) if hf.weights[i] != 0}
            rep.lost += len(want - covered - dropped) if written.get(line) else 0
        return rep
