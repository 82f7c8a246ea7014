"""A tiny tokencensus backend: questions about time and dates go to /Reference.

It shows the whole plugin contract: subclass ``Classifier``, set ``name``,
``model_id`` and ``taxonomy_version``, implement ``predict`` (or
``classify``), and register the class in the ``tokencensus.classifiers``
entry-point group (see this package's pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokencensus.classify import Classifier, Prediction

__all__ = ["QuestionClassifier"]

_RULES = [
    (("what time", "timezone", "time zone", "what day", "calendar"), "/Reference/Other", 0.8),
    (("weather", "forecast", "rain"), "/News/Weather", 0.8),
]


class QuestionClassifier(Classifier):
    """Keyword rules over the prompt window; one prediction per text, never dropped."""

    name = "example"
    model_id = "example-question-rules-1"
    taxonomy_version = "v2"

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(threshold=threshold)
        self.options = kwargs

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        out = []
        for text in texts:
            low = (text or "").lower()
            if not low.strip():
                out.append(Prediction(error="empty"))
                continue
            labels = [
                (path, conf)
                for words, path, conf in _RULES
                if conf >= self.threshold and any(w in low for w in words)
            ]
            out.append(Prediction(labels=labels))
        return out
