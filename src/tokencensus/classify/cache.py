"""A classification cache in front of any backend, so reruns cost nothing.

:class:`CachedClassifier` wraps a :class:`~tokencensus.classify.Classifier`
and keeps its predictions in a SQLite file keyed by

    sha256(first 1,000 characters) x backend name x model_id x taxonomy x threshold

(``model_id`` carries each backend's model, prompt and taxonomy versions).
It stores the key's hash, the labels and the bucket scores: never the text.
Predictions with an ``error`` are not stored, so a failed text is tried
again on the next run. Identical texts within one call are sent once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokencensus.classify import Classifier, Prediction, prompt_window

SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS predictions (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model_id TEXT NOT NULL,
    taxonomy TEXT NOT NULL,
    labels TEXT NOT NULL,
    bucket_scores TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def text_hash(text: str | None) -> str:
    """sha256 of the part of ``text`` a classifier sees (its first 1,000 characters)."""
    return hashlib.sha256(prompt_window(text).encode("utf-8", "surrogatepass")).hexdigest()


class PredictionCache:
    """A SQLite table of predictions by key; safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        self._lock = threading.Lock()
        with self._lock, self._conn:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_DDL)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def get_many(self, keys: Sequence[str]) -> dict[str, Prediction]:
        out: dict[str, Prediction] = {}
        uniq = list(dict.fromkeys(keys))
        with self._lock:
            for k in range(0, len(uniq), 500):
                chunk = uniq[k : k + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, labels, bucket_scores FROM predictions WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, labels, buckets in rows:
                    out[key] = Prediction(
                        labels=[(p, float(c)) for p, c in json.loads(labels)],
                        bucket_scores=json.loads(buckets) if buckets else None,
                    )
        return out

    def put_many(self, rows: Sequence[tuple[str, str, str, str, Prediction]]) -> int:
        """Store (key, backend, model_id, taxonomy, prediction) rows; errors are skipped."""
        now = time.time()
        data = [
            (
                key,
                backend,
                model_id,
                tax,
                json.dumps([[p, float(c)] for p, c in pred.labels]),
                json.dumps(pred.bucket_scores) if pred.bucket_scores else None,
                now,
            )
            for key, backend, model_id, tax, pred in rows
            if pred.error is None
        ]
        if data:
            with self._lock, self._conn:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?)", data
                )
        return len(data)

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class CachedClassifier(Classifier):
    """``inner`` behind a prediction cache at ``path`` (a SQLite file, or ``":memory:"``).

    Behaves as ``inner`` (same name, model_id, taxonomy, threshold) except
    that texts seen before are answered from the cache. ``stats`` counts
    ``hits``, ``misses`` and ``stored``.
    """

    def __init__(self, inner: Classifier, path: str | os.PathLike[str]) -> None:
        super().__init__(threshold=inner.threshold)
        self.inner = inner
        self.name = inner.name
        self.model_id = inner.model_id
        self.taxonomy_version = inner.taxonomy_version
        self.cache = PredictionCache(path)
        self.stats = {"hits": 0, "misses": 0, "stored": 0}

    def key(self, text: str | None) -> str:
        """The cache key of ``text`` for this backend (a hash; no text in it)."""
        parts = [
            text_hash(text),
            self.inner.name,
            self.inner.model_id,
            self.inner.taxonomy_version,
            repr(float(self.inner.threshold)),
        ]
        return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        keys = [self.key(t) for t in texts]
        found = self.cache.get_many(keys)
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in found and k not in todo:
                todo[k] = i
        self.stats["hits"] += sum(1 for k in keys if k in found)
        self.stats["misses"] += len(keys) - sum(1 for k in keys if k in found)
        fresh: dict[str, Prediction] = {}
        if todo:
            preds = self.inner.predict([texts[i] for i in todo.values()])
            if len(preds) != len(todo):
                raise RuntimeError(
                    f"{type(self.inner).__name__}.predict returned {len(preds)} "
                    f"predictions for {len(todo)} texts"
                )
            fresh = dict(zip(todo, preds, strict=True))
            self.stats["stored"] += self.cache.put_many(
                [
                    (k, self.inner.name, self.inner.model_id, self.inner.taxonomy_version, p)
                    for k, p in fresh.items()
                ]
            )
        out = []
        for k in keys:
            p = found.get(k) or fresh[k]
            out.append(
                Prediction(
                    list(p.labels), dict(p.bucket_scores) if p.bucket_scores else None, p.error
                )
            )
        return out

    def uncached(self, texts: Sequence[str]) -> tuple[list[str], int]:
        """The texts a run would still send (one of each), and how many the cache answers."""
        keys = [self.key(t) for t in texts]
        found = self.cache.get_many(keys)
        first: dict[str, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in found:
                first.setdefault(k, t)
        return list(first.values()), sum(1 for k in keys if k in found)

    def estimate_cost(self, texts: Sequence[str], **kwargs: Any) -> dict[str, Any]:
        """The inner backend's estimate for the texts the cache cannot answer.

        Adds ``cached`` (texts answered from the cache, at no cost) and
        ``duplicates`` (repeats of a text that is sent once); ``texts`` then
        counts only the distinct texts that would be sent.
        """
        todo, hits = self.uncached(texts)
        est = dict(self.inner.estimate_cost(todo, **kwargs))  # type: ignore[attr-defined]
        est["cached"] = hits
        est["duplicates"] = len(texts) - hits - len(todo)
        return est

    def info(self) -> dict[str, Any]:
        out = dict(self.inner.info())
        out["cache"] = {"path": self.cache.path, **self.stats}
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        # The SQLite connection does not travel; the copy opens the same file.
        return (CachedClassifier, (self.inner, self.cache.path))

    def __getattr__(self, attr: str) -> Any:
        # Anything else (estimate_cost, stats of the backend, close) is the inner one's.
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def close(self) -> None:
        self.cache.close()
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()
