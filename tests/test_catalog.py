"""Model metadata: matching of slugs, dated ids and variants; unknown models never guessed."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tests.conftest import require_shared
from tokencensus.catalog import MODEL_COLUMNS, SNAPSHOT_DIR, Catalog, strip_variant, undate


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return Catalog()


def test_helpers() -> None:
    assert strip_variant("deepseek/deepseek-r1:free") == "deepseek/deepseek-r1"
    assert undate("openai/gpt-5-nano-2025-08-07") == "openai/gpt-5-nano"
    assert undate("anthropic/claude-4.5-sonnet-20250929") == "anthropic/claude-4.5-sonnet"
    # A short version suffix is part of the name, not a date.
    assert undate("deepseek/deepseek-r1-0528") == "deepseek/deepseek-r1-0528"


@pytest.mark.parametrize(
    ("logged", "model_id"),
    [
        ("openai/gpt-4o-mini", "openai/gpt-4o-mini"),  # exact id
        ("anthropic/claude-4.5-sonnet-20250929", "anthropic/claude-sonnet-4.5"),  # canonical slug
        ("openai/gpt-5-nano-2025-08-07", "openai/gpt-5-nano"),  # dated permaslug
        ("qwen/qwen3-235b-a22b-07-25", "qwen/qwen3-235b-a22b-2507"),  # slug != id
        ("anthropic/claude-sonnet-4.5:thinking", "anthropic/claude-sonnet-4.5"),  # variant
        ("z-ai/glm-4.5-air:free", "z-ai/glm-4.5-air:free"),  # variant listed as its own id
        ("arcee-ai/trinity-mini-20251201:free", "arcee-ai/trinity-mini"),  # dated slug + variant
        ("deepseek/deepseek-r1-0528", "deepseek/deepseek-r1-0528"),  # not its :free row
        ("OpenAI/GPT-4o-mini", "openai/gpt-4o-mini"),  # case
        ("gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini-2024-07-18"),  # bare OpenAI batch name
        ("gpt-4o", "openai/gpt-4o"),  # bare name of exactly one catalogue id
    ],
)
def test_matching(cat: Catalog, logged: str, model_id: str) -> None:
    row = cat.match(logged)
    assert row is not None, logged
    assert row["id"] == model_id


def test_variant_never_shadows_base_price(cat: Catalog) -> None:
    base = cat.match("deepseek/deepseek-r1-0528")
    free = cat.match("deepseek/deepseek-r1-0528:free")
    assert float(base["prompt_price"]) > 0
    assert float(free["prompt_price"]) == 0


@pytest.mark.parametrize(
    "logged",
    [
        "anthropic/claude-4.6-opus-20260205",  # released after the snapshot
        "nvidia/nemotron-3-super-120b-a12b-20230311:free",
        "acme/in-house-7b",
        "deepseek/deepseek-r1-0529",  # a near miss is not guessed
        "",
        None,
    ],
)
def test_unknown_not_guessed(cat: Catalog, logged: str | None) -> None:
    assert cat.match(logged) is None


def test_real_openrouter_export_ids(cat: Catalog) -> None:
    """Every id in the real activity export: listed models match, the others are unknown."""
    shared = require_shared()
    rows = list(csv.DictReader(open(shared / "log-samples" / "openrouter" / "sample.csv")))
    logged = set()
    for r in rows:
        m, v = r["model_permaslug"], r["variant"]
        logged.add(f"{m}:{v}" if v and v != "standard" else m)
    got = {m: (cat.match(m) or {}).get("id") for m in logged}
    assert got["openai/gpt-5-nano-2025-08-07"] == "openai/gpt-5-nano"
    assert got["google/gemini-2.5-flash-lite"] == "google/gemini-2.5-flash-lite"
    assert got["arcee-ai/trinity-mini-20251201:free"] == "arcee-ai/trinity-mini"
    assert got["nvidia/nemotron-3-nano-30b-a3b:free"] == "nvidia/nemotron-3-nano-30b-a3b:free"
    assert got["z-ai/glm-4.5-air:free"] == "z-ai/glm-4.5-air:free"
    # Not in the 2025-12-31 snapshot: reported as unknown.
    for m in (
        "anthropic/claude-4.6-opus-20260205",
        "arcee-ai/trinity-large-preview:free",
        "stepfun/step-3.5-flash:free",
        "nvidia/nemotron-3-super-120b-a12b-20230311:free",
    ):
        assert got[m] is None, m
    table = cat.table(sorted(logged)).to_pylist()
    by_key = {r["key"]: r for r in table}
    opus = by_key["anthropic/claude-4.6-opus-20260205"]
    assert opus["model_id"] is None and opus["open_weights"] is None
    assert opus["author"] == "anthropic"  # the id names its author; the rest is not guessed
    nano = by_key["openai/gpt-5-nano-2025-08-07"]
    assert nano["author"] == "openai" and nano["open_weights"] is False


def test_user_catalog_overrides(tmp_path: Path) -> None:
    folder = tmp_path / "cat"
    folder.mkdir()
    shutil.copy(SNAPSHOT_DIR / "authors.csv", folder / "authors.csv")
    with open(folder / "authors.csv", "a", encoding="utf-8") as f:
        f.write("acme,ACME Corp,DE,rest_of_world,in-house\n")
    with open(folder / "models.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(MODEL_COLUMNS)
        w.writerow(
            [
                "acme/in-house-7b",
                "acme/in-house-7b-20250101",
                "ACME 7B",
                "",
                "0.0000001",
                "0.0000002",
                "true",
            ]
        )
    c = Catalog(folder)
    t = {
        r["key"]: r
        for r in c.table(
            ["acme/in-house-7b", "acme/in-house-7b-20250101:free", "openai/gpt-4o"]
        ).to_pylist()
    }
    assert t["acme/in-house-7b"]["author_name"] == "ACME Corp"
    assert t["acme/in-house-7b"]["open_weights"] is True
    assert t["acme/in-house-7b-20250101:free"]["model_id"] == "acme/in-house-7b"
    assert t["openai/gpt-4o"]["model_id"] is None  # the user's catalogue replaces the bundled one
