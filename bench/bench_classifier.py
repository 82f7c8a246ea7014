"""Classifier bench: one command, one table.

    python bench/bench_classifier.py [--labels PATH] [--json]

For each option (``local``; ``minilm`` when torch is installed) it prints accuracy, macro-F1,
Roleplay F1 and ECE on the held-out split of ``shared/labels/dev.jsonl`` (md5(id) < 0.2, the
part training never sees; see ``tokencensus.evaluate.split``), the same on the held-out part of
``labels/synthetic.jsonl`` (non-English traffic and character cards in other layouts), and
prompts/s on this machine, each next to its target. Throughput is measured on the held-out texts
repeated to >= 5,000 prompts, after a warm-up batch, best of 3 passes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tokencensus.buckets import Rules
from tokencensus.classify import prompt_window
from tokencensus.classify.local import LocalClassifier, MiniLMClassifier
from tokencensus.evaluate import evaluate, load_labels, split
from tokencensus.settings import get_settings

TARGETS = {
    "accuracy": (">=", 0.90),
    "macro_f1": (">=", 0.85),
    "roleplay_f1": (">=", 0.95),
    "ece": ("<=", 0.05),
    "prompts_per_s": (">=", 5000.0),
}


def throughput(clf, texts: list[str], n_min: int = 5000, repeats: int = 3) -> float:
    """Prompts/s of the best of ``repeats`` timed passes (as ``timeit`` does: the fastest pass
    is the one least disturbed by other work on the machine)."""
    texts = [prompt_window(t) for t in texts]
    clf.predict(texts[:256])  # warm-up
    reps = max(1, -(-n_min // max(1, len(texts))))
    batch = (texts * reps)[: max(n_min, len(texts))]
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(batch), 2048):
            clf.predict(batch[i : i + 2048])
        best = min(best, time.perf_counter() - t0)
    return len(batch) / best


SYNTHETIC = Path(__file__).resolve().parents[1] / "labels" / "synthetic.jsonl"


def bench(labels: Path, n_min: int = 5000) -> list[dict]:
    records = load_labels(labels)
    _, test = split(records)
    # the held-out part of the project's own non-English prompts and other-platform cards
    _, synth = split(load_labels(SYNTHETIC)) if SYNTHETIC.exists() else ([], [])
    rules = Rules.load("study")
    options = [("local", LocalClassifier)]
    if MiniLMClassifier.torch_available():
        options.append(("minilm", MiniLMClassifier))
    rows = []
    for name, cls in options:
        try:
            clf = cls()
        except (FileNotFoundError, ImportError) as exc:
            print(f"{name}: skipped ({exc})", file=sys.stderr)
            continue
        n = n_min if name == "local" else min(n_min, 1000)
        speed = throughput(clf, [r["text"] for r in test], n, repeats=3 if name == "local" else 1)
        for split_name, recs in (("dev", test), ("synthetic", synth)):
            if not recs:
                continue
            m = evaluate(recs, clf, rules)
            rows.append(
                {
                    "option": name,
                    "split": split_name,
                    "n_test": len(recs),
                    "accuracy": m["primary_accuracy"],
                    "macro_f1": m["macro_f1"],
                    "roleplay_f1": m["per_bucket"]["Roleplay"]["f1"],
                    "ece": m["ece"],
                    "prompts_per_s": speed,
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    cols = list(TARGETS)
    head = f"{'option':<8} {'split':<10} {'n':>5} " + " ".join(
        f"{c + ' (target)':>26}" for c in cols
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for c in cols:
            op, tgt = TARGETS[c]
            v = r[c]
            ok = v >= tgt if op == ">=" else v <= tgt
            fmt = f"{v:,.0f}" if c == "prompts_per_s" else f"{v:.3f}"
            tfmt = f"{tgt:,.0f}" if c == "prompts_per_s" else f"{tgt:.2f}"
            cells.append(f"{fmt + ' (' + op + tfmt + ')' + (' ok' if ok else ' MISS'):>26}")
        lines.append(f"{r['option']:<8} {r['split']:<10} {r['n_test']:>5} " + " ".join(cells))
    lines.append(
        f"cores visible: {os.cpu_count()}; held-out: md5(id) < 0.2 of dev.jsonl (dev) and of"
        " labels/synthetic.jsonl (synthetic: non-English traffic, other-platform cards)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=Path, default=None)
    ap.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    ap.add_argument("--n", type=int, default=5000, help="prompts for the throughput figure")
    args = ap.parse_args(argv)
    labels = args.labels or get_settings().shared / "labels" / "dev.jsonl"
    if not labels.exists():
        print(f"no labelled data at {labels}", file=sys.stderr)
        return 2
    rows = bench(labels, args.n)
    print(json.dumps(rows, indent=1) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
