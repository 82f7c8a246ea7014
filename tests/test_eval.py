"""Metric arithmetic of tokencensus.evaluate on a hand-made labelled set and a fake classifier."""

from __future__ import annotations

import json

import pytest

from tokencensus.buckets import Rules
from tokencensus.classify import Classifier, Prediction
from tokencensus.evaluate import (
    KEYS,
    confusion,
    ece_score,
    evaluate,
    load_labels,
    metrics,
    split,
)

RULES = Rules.load("study")


class FakeClassifier(Classifier):
    """Returns a fixed prediction per text."""

    name = "fake"

    def __init__(self, table: dict[str, Prediction]) -> None:
        super().__init__(threshold=0.5)
        self.table = table

    def predict(self, texts):
        return [self.table.get(t, Prediction()) for t in texts]


def _rec(i, text, primary, buckets=None):
    return {"id": f"r{i}", "text": text, "primary": primary, "buckets": buckets or [primary]}


RECORDS = [
    _rec(1, "fix my python", "Programming"),
    _rec(2, "be my knight", "Roleplay", ["Roleplay", "Adult"]),
    _rec(3, "what is rain", "General Q&A/Knowledge"),
    _rec(4, "write an email", "Productivity/Writing"),
]
PREDS = {
    # right, confident
    "fix my python": Prediction(bucket_scores={"Programming": 0.9, "Others": 0.05}),
    # right primary, second bucket missed
    "be my knight": Prediction(bucket_scores={"Roleplay": 0.8, "Adult": 0.3}),
    # wrong: says Programming
    "what is rain": Prediction(bucket_scores={"Programming": 0.6, "General Q&A/Knowledge": 0.55}),
    # no bucket head: decided from paths
    "write an email": Prediction(
        labels=[("/Business & Industrial/Advertising & Marketing/Marketing", 0.7)]
    ),
}


def test_keys_and_arithmetic():
    out = evaluate(RECORDS, FakeClassifier(PREDS), RULES)
    assert list(out) == list(KEYS)
    assert out["primary_accuracy"] == pytest.approx(3 / 4)
    pb = out["per_bucket"]
    # Programming: predicted for r1 (right) and r3 (wrong, + Q&A second at 0.55)
    assert pb["Programming"]["precision"] == pytest.approx(0.5)
    assert pb["Programming"]["recall"] == pytest.approx(1.0)
    assert pb["Programming"]["f1"] == pytest.approx(2 / 3)
    # Q&A: r3 predicts [Programming, Q&A] since 0.55 >= 0.5 -> tp
    assert pb["General Q&A/Knowledge"]["recall"] == pytest.approx(1.0)
    assert pb["Adult"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert pb["Roleplay"]["support"] == 1
    # no bucket has support >= 10 in this tiny set
    assert out["macro_f1"] == 0.0
    # primary shares: true P/R/Q/W = 1 each; predicted P=2, R=1, W=1 -> 25 pp off for P and Q
    assert out["share_error_pp"]["Programming"] == pytest.approx(25.0)
    assert out["share_error_pp"]["General Q&A/Knowledge"] == pytest.approx(25.0)
    assert out["share_error_pp"]["Roleplay"] == pytest.approx(0.0)
    # ECE: bins 0.9 (ok), 0.8 (ok), 0.6 (wrong), 0.7 (ok) -> (0.1 + 0.2 + 0.6 + 0.3) / 4
    assert out["ece"] == pytest.approx((0.1 + 0.2 + 0.6 + 0.3) / 4)
    assert out["prompts_per_second"] > 0


def test_macro_f1_counts_only_supported_buckets():
    recs = [_rec(i, f"t{i}", "Programming") for i in range(10)] + [_rec(99, "x", "Roleplay")]
    assigns = [
        {"primary_bucket": "Programming", "buckets": ["Programming"], "confidence": 1.0}
    ] * 11
    m = metrics(recs, assigns, RULES.buckets)
    assert m["per_bucket"]["Programming"]["f1"] == pytest.approx(2 * (10 / 11) / (1 + 10 / 11))
    # Roleplay (support 1) is left out of the mean
    assert m["macro_f1"] == pytest.approx(m["per_bucket"]["Programming"]["f1"])


def test_ece_edges():
    assert ece_score([], []) == 0.0
    assert ece_score([1.0, 1.0], [True, True]) == pytest.approx(0.0)
    assert ece_score([0.0], [True]) == pytest.approx(1.0)
    assert ece_score([0.25, 0.25, 0.25, 0.25], [True, False, False, False]) == pytest.approx(0.0)


def test_confusion_matrix():
    c = confusion(RECORDS, FakeClassifier(PREDS), RULES)
    assert c["buckets"] == RULES.buckets
    idx = {b: i for i, b in enumerate(c["buckets"])}
    m = c["matrix"]
    assert m[idx["General Q&A/Knowledge"]][idx["Programming"]] == 1
    assert m[idx["Programming"]][idx["Programming"]] == 1
    assert sum(map(sum, m)) == 4


def test_split_deterministic_and_stable():
    recs = [{"id": f"x{i}", "text": str(i)} for i in range(2000)]
    tr, te = split(recs)
    tr2, te2 = split(list(reversed(recs)))
    assert {r["id"] for r in te} == {r["id"] for r in te2}
    assert len(tr) + len(te) == 2000
    assert 0.15 < len(te) / 2000 < 0.25
    # a record keeps its side whatever else is in the list
    _, te_small = split(recs[:100])
    assert {r["id"] for r in te_small} == {r["id"] for r in te if int(r["id"][1:]) < 100}


def test_load_labels(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text(
        json.dumps({"id": "a", "text": "hi", "primary": "Others"}) + "\n\n", encoding="utf-8"
    )
    recs = load_labels(p)
    assert recs == [{"id": "a", "text": "hi", "primary": "Others", "buckets": ["Others"]}]
    p.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=":1:"):
        load_labels(p)
