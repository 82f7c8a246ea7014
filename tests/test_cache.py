"""The classification cache: reruns send nothing, no text is stored, errors are retried."""

from __future__ import annotations

import glob
import sqlite3

import pytest

from tests.fakes import (
    FAST,
    clear_ambient_credentials,
    start_google_server,
    start_openai_server,
)
from tokencensus.classify import Prediction
from tokencensus.classify.cache import CachedClassifier, text_hash
from tokencensus.classify.google import GoogleClassifier
from tokencensus.classify.keyword import KeywordClassifier
from tokencensus.classify.openai_compat import OpenAICompatClassifier

FILLER = (
    " Please explain it step by step with a few examples, since I am new to this and"
    " want to understand every part of the answer properly before I try it myself."
)
TEXTS = [
    "How do I parse JSON in python without loading the whole file?" + FILLER,
    "A recipe for sourdough bread that a beginner can manage at home." + FILLER,
    "Tell me about the history of lighthouses on the Atlantic coast." + FILLER,
    "Continue the dragon roleplay where my knight enters the cave." + FILLER,
]


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch, tmp_path):
    clear_ambient_credentials(monkeypatch, tmp_path)


def google(g, **kw):
    return GoogleClassifier(base_url=g.base_url, api_key="test-key", **{**FAST, **kw})


def as_tuples(preds):
    return [(p.labels, p.bucket_scores, p.error) for p in preds]


def test_second_run_sends_zero_requests(tmp_path):
    db = tmp_path / "cache" / "classify.sqlite"
    with start_google_server() as g:
        first = CachedClassifier(google(g), db)
        a = first.predict(TEXTS)
        sent = len(g.api_requests())
        first.close()
        # A new process would build a new classifier on the same file.
        second = CachedClassifier(google(g), db)
        b = second.predict(TEXTS)
        assert len(g.api_requests()) == sent == len(TEXTS)
    assert as_tuples(a) == as_tuples(b)
    assert second.stats == {"hits": 4, "misses": 0, "stored": 0}
    assert second.info()["cache"]["hits"] == 4 and second.info()["name"] == "google"


def test_cache_file_never_holds_text(tmp_path):
    db = tmp_path / "c.sqlite"
    with start_openai_server() as o:
        clf = CachedClassifier(
            OpenAICompatClassifier(base_url=o.base_url + "/v1", api_key="sk-test", **FAST), db
        )
        clf.predict(TEXTS)
        clf.close()
    blob = b"".join(open(f, "rb").read() for f in glob.glob(str(db) + "*"))
    assert blob  # something was written
    for t in TEXTS:
        for piece in (t[:25], t[10:40], t[-30:], max(t.split(), key=len)):
            assert piece.encode() not in blob, f"cache holds text: {piece!r}"
    # What it does hold: hashes, backend names and labels.
    rows = sqlite3.connect(db).execute("SELECT key, backend, labels FROM predictions").fetchall()
    assert len(rows) == len(TEXTS) and all(len(k) == 64 for k, _, _ in rows)
    assert any("Programming" in labels for _, _, labels in rows)


def test_errors_are_not_cached(tmp_path):
    db = tmp_path / "c.sqlite"
    with start_google_server() as g:
        g.always_fail("500")
        broken = CachedClassifier(google(g, max_retries=0), db)
        assert all(p.error for p in broken.predict(TEXTS[:2]))
        assert len(broken.cache) == 0
        g.clear()
        healthy = CachedClassifier(google(g), db)
        preds = healthy.predict(TEXTS[:2])
        assert len(g.api_requests()) == 2  # tried again, not served as success
        assert all(p.error is None for p in preds) and len(healthy.cache) == 2


def test_key_separates_backend_model_and_taxonomy(tmp_path):
    db = tmp_path / "c.sqlite"
    with start_google_server() as g:
        v2 = CachedClassifier(google(g), db)
        v1 = CachedClassifier(google(g, api_version="v1", model="v1"), db)
        v2.predict(TEXTS[:1])
        (p1,) = v1.predict(TEXTS[:1])
        assert len(g.api_requests()) == 2
    assert v2.key(TEXTS[0]) != v1.key(TEXTS[0])
    assert p1.labels[0][0] == "/Computers & Electronics/Programming"  # V1 path, not V2's
    kw = CachedClassifier(KeywordClassifier(), db)
    assert kw.key(TEXTS[0]) != v2.key(TEXTS[0])
    assert KeywordClassifier().model_id in {kw.model_id}


def test_key_uses_first_1000_characters_only(tmp_path):
    clf = CachedClassifier(KeywordClassifier(), tmp_path / "c.sqlite")
    base = "x" * 1000
    assert clf.key(base + "tail one") == clf.key(base + "tail two")
    assert text_hash(base + "more") == text_hash(base)
    assert clf.key("a") != clf.key("b")


def test_duplicates_within_a_call_sent_once(tmp_path):
    with start_google_server() as g:
        clf = CachedClassifier(google(g), tmp_path / "c.sqlite")
        preds = clf.predict([TEXTS[0], TEXTS[1], TEXTS[0], TEXTS[0]])
        assert len(g.api_requests()) == 2
    assert preds[0].labels == preds[2].labels == preds[3].labels
    assert preds[0] is not preds[2]  # callers get their own objects


def test_bucket_scores_round_trip_and_delegation(tmp_path):
    class Heads(KeywordClassifier):
        def predict(self, texts):
            return [
                Prediction([("/Adult", 0.9)], {"coding": 0.25, "roleplay": 0.75}) for _ in texts
            ]

        def extra(self):
            return "delegated"

    db = tmp_path / "c.sqlite"
    CachedClassifier(Heads(), db).predict(["a"])
    clf = CachedClassifier(Heads(), db)
    (p,) = clf.predict(["a"])
    assert clf.stats["hits"] == 1
    assert p.labels == [("/Adult", 0.9)] and p.bucket_scores == {"coding": 0.25, "roleplay": 0.75}
    assert clf.extra() == "delegated" and clf.classify(["a"]) == [[("/Adult", 0.9)]]


def test_in_memory_cache():
    clf = CachedClassifier(KeywordClassifier(), ":memory:")
    clf.predict(["write a python script"])
    clf.predict(["write a python script"])
    assert clf.stats["hits"] == 1


def test_dry_run_estimate_skips_cached_texts(tmp_path):
    db = tmp_path / "c.sqlite"
    with start_google_server() as g:
        clf = CachedClassifier(google(g), db)
        clf.predict(TEXTS[:3])
        before = len(g.api_requests())
        est = clf.estimate_cost(TEXTS + [TEXTS[3]])
        assert len(g.api_requests()) == before  # a dry run sends nothing
    assert (
        est["cached"] == 3 and est["duplicates"] == 1 and est["requests"] == 1 and est["units"] == 1
    )


def test_cached_classifier_pickles(tmp_path):
    import pickle

    db = tmp_path / "c.sqlite"
    clf = CachedClassifier(KeywordClassifier(), db)
    clf.predict(["write a python script"])
    copy = pickle.loads(pickle.dumps(clf))
    copy.predict(["write a python script"])
    assert copy.stats["hits"] == 1 and copy.cache.path == str(db)
