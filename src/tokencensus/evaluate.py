"""Measure a classifier against labelled prompts (issue 3 contract).

``evaluate(records, classifier, rules)`` returns exactly these keys:

- ``primary_accuracy``: share of records whose predicted primary bucket
  (``rules.assign(labels, bucket_scores)["primary_bucket"]``) equals the record's ``primary``.
- ``per_bucket``: ``{bucket: {precision, recall, f1, support}}``, multi-label: a record counts in
  every bucket its ``buckets`` lists (true) and every bucket ``assign(...)["buckets"]`` lists
  (predicted). ``support`` is the number of records truly in the bucket.
- ``macro_f1``: mean F1 over buckets with support >= 10.
- ``share_error_pp``: ``{bucket: |predicted share - true share|}`` of *primary* buckets, in
  percentage points (0-100).
- ``ece``: expected calibration error of the primary-bucket confidence (``assign(...)["confidence"]``,
  0 where the classifier gave no label) against whether the primary bucket is right, over 10
  equal-width bins on [0, 1]: ``sum_k n_k / N * |mean confidence_k - accuracy_k|``.
- ``prompts_per_second``: records classified per second of wall time (``classifier.predict``
  over the whole list, in batches).

``confusion(records, classifier, rules)`` gives the primary-bucket confusion matrix separately;
``split(records)`` is the deterministic train/test split used by training and the bench.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from tokencensus.classify import Classifier, Prediction, prompt_window

KEYS = (
    "primary_accuracy",
    "per_bucket",
    "macro_f1",
    "share_error_pp",
    "ece",
    "prompts_per_second",
)
ECE_BINS = 10
MIN_SUPPORT = 10


def load_labels(path: str | Path) -> list[dict]:
    """Labelled records from a JSONL file (blank lines skipped; bad lines raise with their number)."""
    out: list[dict] = []
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON: {exc}") from exc
            if "text" not in rec or "primary" not in rec:
                raise ValueError(f"{path}:{n}: a labelled record needs 'text' and 'primary'")
            rec.setdefault("buckets", [rec["primary"]])
            out.append(rec)
    return out


def _hash_unit(key: str) -> float:
    return int(hashlib.md5(key.encode("utf-8")).hexdigest()[:12], 16) / float(16**12)


def split(records: Sequence[dict], test_fraction: float = 0.2) -> tuple[list[dict], list[dict]]:
    """(train, test): a record is in test when md5(id) maps below ``test_fraction``.

    Deterministic and stable: a record keeps its side whatever else is in the list.
    Records without an id are keyed by their text.
    """
    train, test = [], []
    for r in records:
        key = str(r.get("id") if r.get("id") is not None else r.get("text", ""))
        (test if _hash_unit(key) < test_fraction else train).append(r)
    return train, test


def predict_all(
    records: Sequence[dict], classifier: Classifier, batch_size: int = 1024
) -> tuple[list[Prediction], float]:
    """Predictions for every record's text window, and the seconds it took."""
    texts = [prompt_window(r.get("text")) for r in records]
    preds: list[Prediction] = []
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        preds.extend(classifier.predict(texts[i : i + batch_size]))
    return preds, time.perf_counter() - t0


def _assignments(preds: Sequence[Prediction], rules: Any, threshold: float) -> list[dict]:
    return [rules.assign(p.labels, p.bucket_scores, threshold=threshold) for p in preds]


def ece_score(confidences: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS) -> float:
    """10-bin (by default) equal-width expected calibration error; 0.0 for no records."""
    n = len(confidences)
    if n == 0:
        return 0.0
    sums = [[0.0, 0.0, 0] for _ in range(bins)]
    for c, ok in zip(confidences, correct, strict=True):
        c = min(max(float(c), 0.0), 1.0)
        k = min(int(c * bins), bins - 1)
        sums[k][0] += c
        sums[k][1] += 1.0 if ok else 0.0
        sums[k][2] += 1
    return sum(abs(s[0] - s[1]) for s in sums if s[2]) / n


def metrics(records: Sequence[dict], assignments: Sequence[dict], buckets: Sequence[str]) -> dict:
    """The metric keys (all but ``prompts_per_second``) from assignments already made."""
    n = len(records)
    buckets = list(buckets)
    tp = dict.fromkeys(buckets, 0)
    fp = dict.fromkeys(buckets, 0)
    fn = dict.fromkeys(buckets, 0)
    support = dict.fromkeys(buckets, 0)
    true_primary = dict.fromkeys(buckets, 0)
    pred_primary = dict.fromkeys(buckets, 0)
    correct = 0
    confs: list[float] = []
    oks: list[bool] = []
    for rec, a in zip(records, assignments, strict=True):
        gold = set(rec.get("buckets") or [rec["primary"]])
        pred = set(a["buckets"]) | {a["primary_bucket"]}
        for b in buckets:
            if b in gold:
                support[b] += 1
                if b in pred:
                    tp[b] += 1
                else:
                    fn[b] += 1
            elif b in pred:
                fp[b] += 1
        ok = a["primary_bucket"] == rec["primary"]
        correct += ok
        if rec["primary"] in true_primary:
            true_primary[rec["primary"]] += 1
        if a["primary_bucket"] in pred_primary:
            pred_primary[a["primary_bucket"]] += 1
        confs.append(a["confidence"] if a["confidence"] is not None else 0.0)
        oks.append(ok)
    per_bucket = {}
    for b in buckets:
        p = tp[b] / (tp[b] + fp[b]) if tp[b] + fp[b] else 0.0
        r = tp[b] / (tp[b] + fn[b]) if tp[b] + fn[b] else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per_bucket[b] = {"precision": p, "recall": r, "f1": f, "support": support[b]}
    counted = [per_bucket[b]["f1"] for b in buckets if support[b] >= MIN_SUPPORT]
    return {
        "primary_accuracy": correct / n if n else 0.0,
        "per_bucket": per_bucket,
        "macro_f1": sum(counted) / len(counted) if counted else 0.0,
        "share_error_pp": {
            b: (100.0 * abs(pred_primary[b] - true_primary[b]) / n if n else 0.0) for b in buckets
        },
        "ece": ece_score(confs, oks),
    }


def evaluate(
    records: Sequence[dict], classifier: Classifier, rules: Any, threshold: float | None = None
) -> dict:
    """The issue-3 metrics of ``classifier`` under ``rules`` on labelled ``records``."""
    thr = classifier.threshold if threshold is None else threshold
    preds, seconds = predict_all(records, classifier)
    out = metrics(records, _assignments(preds, rules, thr), rules.buckets)
    out["prompts_per_second"] = len(records) / seconds if seconds > 0 else float("inf")
    return {k: out[k] for k in KEYS}


def confusion_from(
    records: Sequence[dict], assignments: Sequence[dict], buckets: Sequence[str]
) -> dict:
    """Confusion matrix from assignments already made (see :func:`confusion`)."""
    buckets = list(buckets)
    idx = {b: i for i, b in enumerate(buckets)}
    m = [[0] * len(buckets) for _ in buckets]
    for rec, a in zip(records, assignments, strict=True):
        t, p = rec["primary"], a["primary_bucket"]
        if t in idx and p in idx:
            m[idx[t]][idx[p]] += 1
    return {"buckets": buckets, "matrix": m}


def confusion(records: Sequence[dict], classifier: Classifier, rules: Any) -> dict:
    """Primary-bucket confusion: ``{"buckets": [...], "matrix": m}``, ``m[true][predicted]`` counts.

    Rows are the records' true ``primary`` and columns the predicted primary bucket, both in
    ``rules.buckets`` order; records whose bucket is outside the rule set are left out.
    """
    preds, _ = predict_all(records, classifier)
    return confusion_from(records, _assignments(preds, rules, classifier.threshold), rules.buckets)
