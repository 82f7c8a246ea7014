"""The shipped local classifier: outputs, robustness, known prompts, and no torch at run time."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tokencensus import taxonomy
from tokencensus.buckets import Rules
from tokencensus.classify import get_classifier
from tokencensus.classify.local import (
    BUCKETS,
    MODEL_DIR,
    LocalClassifier,
    bucket_scores_from,
    v2_to_v1,
)
from tokencensus.settings import get_settings

pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "heads.safetensors").exists(), reason="no trained model shipped"
)
RULES = Rules.load("study")


@pytest.fixture(scope="module")
def clf():
    return LocalClassifier()


KNOWN = [
    ("Write a Python function that parses a CSV file and returns a list of dicts.", "Programming"),
    (
        "Fix this SQL query: SELECT name, COUNT(*) FROM users GROUP BY; it gives a syntax error",
        "Programming",
    ),
    (
        "Write {{char}}'s next reply in a fictional chat between {{char}} and {{user}}. "
        "{{char}} is a grumpy tavern keeper in a fantasy kingdom. Stay in character.",
        "Roleplay",
    ),
    (
        "Write Akira's next reply in a fictional chat between Akira and User. Akira is a "
        "cheerful anime girl from Tokyo.\n[Start a new Chat]\nAkira: *waves* Hi! Want to explore?",
        "Roleplay",
    ),
    (
        "Translate the following paragraph into French: The meeting has been moved to Monday.",
        "Translation",
    ),
    (
        "Write a professional email to my manager asking for two days off next week.",
        "Productivity/Writing",
    ),
    ("Write a short poem about autumn leaves falling in the rain.", "Literature/Creative Writing"),
]


def test_all_outputs_valid(clf):
    v2 = taxonomy.path_set("v2")
    texts = [t for t, _ in KNOWN] + ["What causes the seasons on Earth?", "tell me about jazz"]
    for p in clf.predict(texts):
        assert len(p.labels) <= 3
        confs = [c for _, c in p.labels]
        assert confs == sorted(confs, reverse=True)
        for path, c in p.labels:
            assert path in v2
            assert 0.5 <= c <= 1.0
        assert set(p.bucket_scores) == set(RULES.buckets)
        assert all(0.0 <= v <= 1.0 for v in p.bucket_scores.values())
        top = max(p.bucket_scores, key=p.bucket_scores.get)
        assert p.bucket_scores[top] > 0


@pytest.mark.parametrize("text,bucket", KNOWN)
def test_known_prompts(clf, text, bucket):
    (p,) = clf.predict([text])
    assert RULES.assign(p.labels, p.bucket_scores)["primary_bucket"] == bucket


def test_known_topic_paths(clf):
    (p,) = clf.predict(
        ["How do I reverse a linked list in Java? My code throws NullPointerException"]
    )
    assert p.labels and p.labels[0][0].startswith("/Computers & Electronics/Programming")


@pytest.mark.parametrize("text", ["", "hi", "hello", "test", "123", "ok", "你好", "привет", "   "])
def test_no_topic_gets_no_label(clf, text):
    (p,) = clf.predict([text])
    assert p.labels == []


def test_unicode_robust(clf):
    texts = [
        "😀🔥💯 " * 50,
        "مرحبا، كيف يمكنني تعلم البرمجة بلغة بايثون؟",  # RTL
        "שלום עולם",
        "a\x00b\x00c NUL inside",
        "lone surrogate \ud800 here \udfff",
        "\u202e\u200b\ufeff zero-width and bidi",
        "x" * 100_000,
        "日本語の文章を英語に翻訳してください。",
        "이 코드를 디버그해 주세요: print(hello",
        "Объясни, как работает фотосинтез.",
        "¿Cómo puedo mejorar mi currículum?",
        "Comment écrire une lettre de motivation ?",
        "Wie funktioniert ein Verbrennungsmotor?",
        "Come si prepara il risotto?",
        "Hoe schrijf ik een goede e-mail?",
        "Como faço um bolo de chocolate?",
        "請幫我寫一個 Python 程式",
        "请帮我写一个快速排序",
    ]
    preds = clf.predict(texts)
    assert len(preds) == len(texts)
    for p in preds:
        assert p.error is None
        assert all(0.0 <= c <= 1.0 for _, c in p.labels)


def test_deterministic(clf):
    texts = [t for t, _ in KNOWN]
    a = clf.predict(texts)
    b = LocalClassifier().predict(list(reversed(texts)))[::-1]
    assert [x.labels for x in a] == [x.labels for x in b]
    assert [x.bucket_scores for x in a] == [x.bucket_scores for x in b]


def test_threshold_and_v1():
    low = LocalClassifier(threshold=0.05)
    (p,) = low.predict(["Write a Python function that sorts a list of numbers."])
    assert len(p.labels) >= 1
    v1 = LocalClassifier(taxonomy="v1")
    (q,) = v1.predict(["Write a Python function that sorts a list of numbers."])
    assert all(path in taxonomy.path_set("v1") for path, _ in q.labels)
    mapping = v2_to_v1()
    assert len(mapping) == len(taxonomy.paths("v2"))
    assert set(mapping.values()) <= taxonomy.path_set("v1")
    assert mapping["/Games/Roleplaying Games"] == "/Games/Roleplaying Games"
    with pytest.raises(ValueError):
        LocalClassifier(taxonomy="v3")


def test_every_path_has_a_head_row(clf):
    # each of the 1,091 paths has its own row and prototype (its name is a training example)
    n = len(taxonomy.paths("v2"))
    assert clf.heads.path_W.shape[0] == n and clf.heads.path_P.shape[0] == n
    names = ["Poetry", "Roleplaying Games"]
    conf, _, _ = clf._scores(names)
    top3 = [[clf.heads.paths[i] for i in row] for row in np.argsort(-conf, axis=1)[:, :3]]
    assert top3[0][0] == "/Books & Literature/Poetry"
    assert "/Games/Roleplaying Games" in top3[1]
    assert "/Books & Literature/Poetry" not in top3[1]


def test_bucket_scores_semantics():
    heads = {"temperature": np.array([1.0]), "member_platt": np.tile([1.0, 0.0], (9, 1))}
    zp = np.zeros((1, 9))
    zp[0, 1] = 3.0  # Roleplay
    zm = np.full((1, 9), -5.0)
    zm[0, 7] = 5.0  # Adult applies
    (s,) = bucket_scores_from(zp, zm, heads, BUCKETS)
    assert max(s, key=s.get) == "Roleplay"
    assert s["Adult"] < s["Roleplay"]
    assert s["Adult"] > 0.5
    a = RULES.assign([], s)
    assert a["primary_bucket"] == "Roleplay" and a["buckets"] == ["Roleplay", "Adult"]


def test_registry():
    c = get_classifier("local")
    assert isinstance(c, LocalClassifier)
    assert c.info()["name"] == "local"


def test_no_torch_at_runtime():
    code = (
        "import sys; from tokencensus.classify.local import LocalClassifier;"
        "LocalClassifier().predict(['hello world', 'write code']);"
        "print(json.dumps(sorted(m for m in ('torch','sentence_transformers','transformers')"
        " if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json;" + code], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_meta_records_training():
    meta = json.loads((MODEL_DIR / "meta.json").read_text(encoding="utf-8"))
    assert len(meta["training_data_sha256"]["labels/dev.jsonl"]) == 64
    assert "test" in meta["metrics"] and "settings" in meta
    # what the default (numpy) classifier loads; heads_minilm is the optional slower option's
    default = ("static.safetensors", "tokenizer.json.gz", "static.json", "heads.safetensors")
    assert sum((MODEL_DIR / f).stat().st_size for f in default) < 8e6  # light: no torch, < 8 MB


@pytest.mark.skipif(
    not (get_settings().shared / "labels" / "dev.jsonl").exists(), reason="no shared labels"
)
def test_held_out_floor(clf):
    from tokencensus.evaluate import evaluate, load_labels, split

    _, test = split(load_labels(get_settings().shared / "labels" / "dev.jsonl"))
    m = evaluate(test, clf, RULES)
    # well under what meta.json reports: catches a broken model, not a slightly worse one
    assert m["primary_accuracy"] > 0.6
    assert m["per_bucket"]["Roleplay"]["f1"] > 0.75
    assert m["ece"] < 0.12
