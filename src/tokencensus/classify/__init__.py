"""Classify prompt text into Google content-category paths with confidences.

A backend is a :class:`Classifier`, found by name through the
``tokencensus.classifiers`` entry-point group (as ``llm`` finds its model
plugins), so new backends plug in without touching the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pyarrow as pa

from tokencensus.schema import CLASSIFY_CHARS

ENTRY_POINT_GROUP = "tokencensus.classifiers"

Label = tuple[str, float]


@dataclass
class Prediction:
    """What a backend says of one text.

    ``labels`` are (path, confidence) pairs at or above the threshold, best first.
    ``bucket_scores`` is an optional direct bucket head's probability per bucket,
    used where the taxonomy cannot tell the bucket (see :mod:`tokencensus.buckets`).
    ``error`` records why a text could not be classified (kept, never dropped).
    """

    labels: list[Label] = field(default_factory=list)
    bucket_scores: dict[str, float] | None = None
    error: str | None = None


class Classifier:
    """Base class of every backend: ``classify(texts)`` -> list of (path, confidence) lists."""

    #: Name under which the backend is registered.
    name: str = "base"
    #: Taxonomy the paths come from ("v2" or "v1").
    taxonomy_version: str = "v2"
    #: Identifies the model and its version, for caches and reports.
    model_id: str = "base"

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        self.threshold = threshold

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Full predictions; backends override this (or :meth:`classify`)."""
        return [Prediction(labels=labels) for labels in self.classify(texts)]

    def classify(self, texts: Sequence[str]) -> list[list[Label]]:
        """For each text, its (path, confidence) pairs at or above the threshold."""
        if type(self).predict is Classifier.predict:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither predict nor classify"
            )
        return [p.labels for p in self.predict(texts)]

    def info(self) -> dict[str, Any]:
        """What the report and the cache say about this backend."""
        return {"name": self.name, "model_id": self.model_id, "taxonomy": self.taxonomy_version}


def available() -> dict[str, Any]:
    """Registered backends by name (entry points, not yet loaded)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_classifier(name: str = "local", **kwargs: Any) -> Classifier:
    """Load the backend registered as ``name`` and build it with ``kwargs``."""
    eps = available()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none"
        raise ValueError(f"unknown classifier backend {name!r}; installed: {known}")
    cls = eps[name].load()
    return cls(**kwargs)


def prompt_window(text: str | None) -> str:
    """The part of a prompt a classifier sees: its first 1,000 characters."""
    return (text or "")[:CLASSIFY_CHARS]


PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field(
            "labels",
            pa.list_(pa.struct([("path", pa.string()), ("confidence", pa.float32())])),
        ),
        pa.field("bucket_scores", pa.map_(pa.string(), pa.float32())),
        pa.field("error", pa.string()),
    ]
)


def classify_batch(batch: pa.RecordBatch | pa.Table, classifier: Classifier) -> pa.Table:
    """Classify the rows of ``batch`` that carry prompt text.

    A function over Arrow batches, so it runs the same in a local stream and
    in Ray Data's ``map_batches``. The output holds no text.
    """
    ids = batch.column("request_id").to_pylist()
    texts = batch.column("prompt_text").to_pylist()
    keep = [i for i, t in enumerate(texts) if t]
    preds = classifier.predict([prompt_window(texts[i]) for i in keep]) if keep else []
    rows = []
    for i, p in zip(keep, preds, strict=True):
        rows.append(
            {
                "request_id": ids[i],
                "labels": [{"path": a, "confidence": float(c)} for a, c in p.labels],
                "bucket_scores": list(p.bucket_scores.items()) if p.bucket_scores else None,
                "error": p.error,
            }
        )
    return pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA)
