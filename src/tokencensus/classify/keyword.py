"""A transparent keyword backend: regular expressions to V2 paths.

It is weak but instant and fully explainable; the tests use it as a fast,
deterministic backend, and users can read exactly why a label was given.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tokencensus.classify import Classifier, Label

_RULES: list[tuple[str, str, float]] = [
    (
        r"\{\{char\}\}|\{\{user\}\}|stay in character|roleplay|role-play|\brp\b|character card"
        r"|you are playing|fictional chat|game master|text adventure|\*[a-z][^*]{2,40}\*",
        "/Games/Roleplaying Games",
        0.8,
    ),
    (
        r"```|\bdef |\bfunction\b|\bclass \w+|#include|\bSELECT\b|\bimport \w+|python|javascript"
        r"|typescript|\bjava\b|c\+\+|rust\b|golang|\bsql\b|regex|bash|debug|compile|\bapi\b|stack trace",
        "/Computers & Electronics/Programming/Other",
        0.75,
    ),
    (
        r"\btranslat|into (english|chinese|french|spanish|german|japanese|russian)|翻译|перевед",
        "/Reference/Language Resources/Foreign Language Resources",
        0.7,
    ),
    (r"\bpoem\b|\bpoetry\b|haiku|sonnet", "/Books & Literature/Poetry", 0.7),
    (r"\bstory\b|\bnovel\b|fan ?fiction|chapter|short story", "/Books & Literature/Other", 0.6),
    (
        r"\bessay\b|homework|\bexam\b|quiz|lesson plan|\bstudents?\b|curriculum",
        "/Jobs & Education/Education/Other",
        0.6,
    ),
    (
        r"\bemail\b|e-mail|cover letter|resume\b|\bcv\b|marketing|\bseo\b|business plan",
        "/Business & Industrial/Other",
        0.6,
    ),
    (r"\bsex|erotic|nsfw|porn|explicit", "/Adult", 0.7),
    (r"\bmath|equation|integral|derivative|algebra", "/Science/Mathematics/Other", 0.6),
    (r"\bdoctor\b|symptom|disease|medic", "/Health/Other", 0.6),
    (r"\blaw\b|legal|contract|lawyer", "/Law & Government/Legal/Other", 0.6),
    (r"recipe|cook|bake", "/Food & Drink/Cooking & Recipes/Other", 0.6),
]


class KeywordClassifier(Classifier):
    """Regex rules over the first 1,000 characters; each rule gives one path."""

    name = "keyword"
    model_id = "keyword-rules-1"

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(threshold=threshold)
        self._rules = [(re.compile(p, re.IGNORECASE), path, c) for p, path, c in _RULES]

    def classify(self, texts: Sequence[str]) -> list[list[Label]]:
        out: list[list[Label]] = []
        for text in texts:
            labels = [(path, c) for rx, path, c in self._rules if rx.search(text or "")]
            labels = sorted({p: c for p, c in labels}.items(), key=lambda x: -x[1])[:3]
            out.append([(p, c) for p, c in labels if c >= self.threshold])
        return out
