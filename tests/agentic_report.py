"""Per-template exactness of sftprep on the agentic corpus (issue #18).

    .venv/bin/python tests/agentic_report.py [--n N] [--seed S] [--templates GLOB] [--json OUT] [--failures K]
        [--no-trl] [--keep]

Prepares build_corpus(N) with every template (GLOB matches names like "trl/qwen3", "own/*") and prints, per
template: trainable turns transformers renders (V = {}), turns trained, exact %, wrong, lost, reconciliation
problems, TRL's {% generation %} variant agreement, records and single turns rejected by reason ("(k renderable)":
k of them render every trainable turn inference-consistently under {} or a candidate V such as enable_thinking, so
a refusal is a product choice there, e.g. nothing_to_train, or a missed V), failure classes;
then exact % for plain chats vs tool/reasoning conversations, and the first failures. Needs ../shared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentic_corpus import REPORT_N, build_corpus, write_jsonl
from agentic_oracle import TemplateReport
from agentic_run import cases, compare_trl, run_case, to_json


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:5.1f}%" if b else "    -"


def row(rep: TemplateReport, trl: str) -> str:
    if rep.crash:
        return f"{rep.template:34} CRASH {rep.crash[:150]}"
    avoidable = rep.rejected_renderable
    rejected = (
        " ".join(
            f"{k}:{v}" + (f"({avoidable[k]} renderable)" if avoidable[k] else "") for k, v in rep.rejected.most_common()
        )
        or "-"
    )
    dropped = " ".join(f"{k}:{v}" for k, v in rep.rejected_turns.most_common()) or "-"
    classes = " ".join(f"{k}:{v}" for k, v in rep.classes.most_common()) or "-"
    problems = len(rep.reconciliation) + len(rep.reject_problems)
    return (
        f"{rep.template:34} {rep.turns_rendered:6} {rep.turns_trained:6} {pct(rep.exact, rep.turns_trained)} "
        f"{rep.wrong:5} {rep.lost:4} {problems:5} {trl:>9}  rejected records {rejected} | turns {dropped}"
        f" | wrong {classes}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=REPORT_N, help="records per source and per generated shape")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--templates", default="*", help='glob over names such as "trl/qwen3", "axolotl/*", "own/*"')
    ap.add_argument("--json", type=Path, help="write every report (failures included) to this file")
    ap.add_argument("--failures", type=int, default=2, help="failure details printed per failing template")
    ap.add_argument("--no-trl", action="store_true", help="skip the comparison with TRL's training templates")
    ap.add_argument("--keep", action="store_true", help="keep every prepared output in the work dir")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="agentic-report-"))
    try:
        return report(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, work: Path) -> int:
    corpus = write_jsonl(build_corpus(args.n, args.seed), work / "corpus.jsonl")
    print(f"corpus: {sum(1 for _ in corpus.open(encoding='utf-8'))} records ({corpus}), work dir {work}")
    # TRL agree: turns TRL's training template marks as we do (but for whitespace after the stop) / compared
    # recon: reconciliation problems and rejects without a reason or message
    cols = ("render", 6), ("train", 6), ("exact", 6), ("wrong", 5), ("lost", 4), ("recon", 5), ("TRL agree", 9)
    head = f"{'template':34} " + " ".join(f"{name:>{width}}" for name, width in cols)
    print(head)
    reports, details, kinds, t0 = [], [], {"plain": [0, 0], "agentic": [0, 0]}, time.time()
    for case in cases(args.templates):
        rep = run_case(case, corpus, work, work / "tokenizers")
        cmp = None if args.no_trl else compare_trl(case, corpus, work / "tokenizers")
        if not args.keep:  # a few MB per template and corpus record: do not let 88 of them pile up
            shutil.rmtree(work / case.name.replace("/", "__"), ignore_errors=True)
        trl = f"{cmp.agree + cmp.whitespace}/{cmp.turns}" if cmp else "-"
        print(row(rep, trl), flush=True)
        reports.append(rep)
        for k, (n, ok) in rep.by_kind.items():
            kinds[k][0] += n
            kinds[k][1] += ok
        if not rep.ok and not rep.crash:
            details.append(rep.format(args.failures))
        if cmp and cmp.first:
            details.append(f"{rep.template}: TRL training template disagrees ({cmp.summary()}):\n      {cmp.first}")
    trained = sum(r.turns_trained for r in reports)
    exact = sum(r.exact for r in reports)
    failing = [r.template for r in reports if not r.ok]
    print(f"\n{len(reports)} templates in {time.time() - t0:.0f}s; failing {len(failing)}: {' '.join(failing)}")
    print(f"overall exact {pct(exact, trained)} of {trained} trained turns")
    for k, (n, ok) in kinds.items():
        print(f"  {k:8} exact {pct(ok, n)} of {n} checked turns")
    classes: Counter[str] = sum((r.classes for r in reports), Counter())
    print("failure classes:", dict(classes.most_common()))
    print("\n" + "\n\n".join(details))
    if args.json:
        args.json.write_text(json.dumps([to_json(r) for r in reports], indent=1, ensure_ascii=False), "utf-8")
    return 0 if not failing else 1


if __name__ == "__main__":
    raise SystemExit(main())
