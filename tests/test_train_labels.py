"""The project's label files load the same whether plain or gzipped, and join shared texts."""

import gzip
import json

from tokencensus.train import EXTRA_LABELS, load_extra, load_synthetic

RECS = [
    {"id": "src:1", "primary": "Programming", "buckets": ["Programming"], "categories": []},
    {"id": "src:2", "primary": "Roleplay", "buckets": ["Roleplay"], "categories": []},
    {"id": "src:3", "primary": "Others", "buckets": ["Others"], "categories": []},
]
PROMPTS = [{"id": "src:1", "text": "fix my SQL"}, {"id": "src:2", "text": "You are a knight."}]


def test_extra_labels_plain_and_gzipped_join_texts(tmp_path):
    body = "\n".join(json.dumps(r) for r in RECS) + "\n\n"
    plain = tmp_path / "extra.jsonl"
    plain.write_text(body, encoding="utf-8")
    gz = tmp_path / "extra.jsonl.gz"
    gz.write_bytes(gzip.compress(body.encode()))
    for path in (plain, gz):
        out = load_extra(path, PROMPTS, exclude_ids={"src:2"})
        # src:2 excluded (in dev), src:3 has no shared text
        assert [(r["id"], r["text"], r["primary"]) for r in out] == [
            ("src:1", "fix my SQL", "Programming")
        ]
    assert load_extra(tmp_path / "missing.jsonl.gz", PROMPTS, set()) == []


def test_synthetic_texts_cut_to_the_prompt_window(tmp_path):
    path = tmp_path / "synthetic.jsonl.gz"
    path.write_bytes(gzip.compress(json.dumps({**RECS[0], "text": "x" * 1500}).encode()))
    (rec,) = load_synthetic(path)
    assert len(rec["text"]) == 1000 and rec["primary"] == "Programming"


def test_shipped_extra_labels_are_readable():
    with gzip.open(EXTRA_LABELS, "rt", encoding="utf-8") as fh:
        first = json.loads(fh.readline())
    assert {"id", "primary", "buckets", "categories"} <= first.keys() and "text" not in first
