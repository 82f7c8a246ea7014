"""Path -> bucket rules: shipped sets, longest prefix, sub-tags, the bucket head, user TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokencensus.buckets import Rules
from tokencensus.taxonomy import path_set, paths


def test_taxonomy_sizes() -> None:
    assert len(paths("v2")) == 1091
    assert len(paths("v1")) == 620


@pytest.mark.parametrize("name", ["study", "openrouter"])
def test_every_rule_prefix_exists_in_taxonomy(name: str) -> None:
    rules = Rules.load(name)
    v2 = path_set("v2")
    for prefix, bucket in rules.rules:
        assert prefix == "/" or any(p == prefix or p.startswith(prefix + "/") for p in v2), prefix
        assert bucket in rules.buckets


def test_study_mapping() -> None:
    r = Rules.load("study")
    assert r.bucket_of("/Computers & Electronics/Programming/Scripting Languages") == "Programming"
    assert r.bucket_of("/Science/Computer Science/Other") == "Programming"
    assert r.bucket_of("/Games/Roleplaying Games") == "Roleplay"
    assert r.bucket_of("/Reference/Language Resources/Foreign Language Resources") == "Translation"
    assert r.bucket_of("/Books & Literature/Poetry") == "Literature/Creative Writing"
    assert r.bucket_of("/Adult") == "Adult"
    assert r.bucket_of("/Jobs & Education/Education/Other") == "Education"
    # Longest prefix wins over the catch-all.
    assert r.bucket_of("/Food & Drink/Cooking & Recipes/Other") == "General Q&A/Knowledge"


def test_subtags_and_head() -> None:
    r = Rules.load("study")
    a = r.assign([("/Games/Roleplaying Games", 0.9), ("/Adult", 0.6)])
    assert a["primary_bucket"] == "Roleplay" and a["subtag"] == "Games/Roleplaying Games"
    assert a["decided_by"] == "paths"
    # A roleplay card about cooking: the taxonomy says food, the bucket head says Roleplay.
    b = r.assign(
        [("/Food & Drink/Cooking & Recipes/Other", 0.8)], {"Roleplay": 0.85, "Others": 0.1}
    )
    assert b["primary_bucket"] == "Roleplay" and b["decided_by"] == "bucket_head"
    empty = r.assign([])
    assert empty["primary_bucket"] == "Others" and empty["decided_by"] == "no_label"


def test_openrouter_rule_set() -> None:
    r = Rules.load("openrouter")
    assert (
        r.bucket_of("/Internet & Telecom/Web Services/Search Engine Optimization & Marketing")
        == "marketing/seo"
    )
    assert r.bucket_of("/Finance/Investing") == "finance"
    assert r.bucket_of("/Pets & Animals/Pets/Cats") == "other"


def test_user_rules_file(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(
        'name="mine"\nbuckets=["Code","Rest"]\ndefault="Rest"\n'
        '[[rule]]\nprefix="/Computers & Electronics"\nbucket="Code"\n'
    )
    r = Rules.load(f)
    assert r.bucket_of("/Computers & Electronics/Programming/Other") == "Code"
    assert r.bucket_of("/Adult") == "Rest"
    bad = tmp_path / "bad.toml"
    bad.write_text('buckets=["A"]\n[[rule]]\nprefix="/x"\nbucket="B"\n')
    with pytest.raises(ValueError, match="unknown bucket 'B'"):
        Rules.load(bad)
    with pytest.raises(ValueError, match="unknown rule set"):
        Rules.load("nope")
