"""Model metadata: author, origin and open weights, from a bundled snapshot.

The snapshot is built from ``../shared/models`` (OpenRouter's model list of
2025-12-31, authors with country/origin, open-weights calls) by
:func:`build_snapshot`; users can override it with their own folder.
Matching handles canonical slugs, dated ids and variant suffixes; a model that
still matches nothing is reported as unknown, never guessed.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pyarrow as pa

from tokencensus.settings import DATA_DIR

SNAPSHOT_DIR = DATA_DIR / "models"
_DATE_SUFFIX = re.compile(r"-(20\d\d-?\d\d-?\d\d|\d{4})$")

CATALOG_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("model_id", pa.string()),
        ("author", pa.string()),
        ("author_name", pa.string()),
        ("origin_group", pa.string()),
        ("open_weights", pa.bool_()),
        ("prompt_price", pa.float64()),
        ("completion_price", pa.float64()),
        ("created", pa.int64()),
    ]
)


def build_snapshot(models_dir: Path, out_dir: Path = SNAPSHOT_DIR) -> int:
    """Write a compact ``models.csv`` and ``authors.csv`` from a ``shared/models`` folder."""
    models_dir, out_dir = Path(models_dir), Path(out_dir)
    src = next(models_dir.glob("openrouter-models-*.json"))
    data = json.loads(src.read_text(encoding="utf-8"))["data"]
    ow = {
        r["model_id"]: r["open_weights"]
        for r in csv.DictReader(open(models_dir / "open-weights.csv"))
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "models.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "id",
                "canonical_slug",
                "name",
                "created",
                "prompt_price",
                "completion_price",
                "open_weights",
            ]
        )
        for m in data:
            p = m.get("pricing") or {}
            w.writerow(
                [
                    m["id"],
                    m.get("canonical_slug") or m["id"],
                    m.get("name", ""),
                    m.get("created", ""),
                    p.get("prompt", ""),
                    p.get("completion", ""),
                    ow.get(m["id"], ""),
                ]
            )
    (out_dir / "authors.csv").write_text(
        (models_dir / "authors.csv").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (out_dir / "SOURCE.md").write_text(
        f"Built by tokencensus.catalog.build_snapshot from `{src.name}` (OpenRouter GET /api/v1/models,"
        " saved 2025-12-31 by the public repo Xiechengqi/openrouter-free-api), authors.csv and"
        " open-weights.csv of the project's shared model metadata. See those files' README for the"
        " basis of each open-weights and origin call.\n",
        encoding="utf-8",
    )
    return len(data)


def strip_variant(model: str) -> str:
    """``deepseek/deepseek-r1:free`` -> ``deepseek/deepseek-r1``."""
    return model.split(":", 1)[0]


class Catalog:
    """Look up author, origin, open weights and list price for a logged model name."""

    def __init__(self, folder: Path | None = None) -> None:
        folder = Path(folder) if folder else SNAPSHOT_DIR
        if not (folder / "models.csv").exists() and any(folder.glob("openrouter-models-*.json")):
            raise ValueError(f"{folder}: run `tokencensus models build {folder}` first")
        self.authors = {
            r["author"]: r for r in csv.DictReader(open(folder / "authors.csv", encoding="utf-8"))
        }
        self.models: dict[str, dict] = {}
        for r in csv.DictReader(open(folder / "models.csv", encoding="utf-8")):
            for key in (r["id"], r["canonical_slug"], strip_variant(r["id"])):
                self.models.setdefault(key, r)

    def match(self, model: str | None) -> dict | None:
        """The catalogue row for ``model``: exact, canonical slug, without variant, undated."""
        if not model:
            return None
        cands = [model, strip_variant(model)]
        base = strip_variant(model)
        undated = _DATE_SUFFIX.sub("", base)
        cands += [undated]
        for c in cands:
            if c in self.models:
                return self.models[c]
        for key, row in self.models.items():
            if _DATE_SUFFIX.sub("", key) == undated:
                return row
        return None

    def table(self, models: list[str]) -> pa.Table:
        """One row per distinct logged model; unknown ones keep nulls (and are reported)."""
        rows = []
        for m in sorted({m for m in models if m}):
            r = self.match(m)
            author = strip_variant(m).split("/", 1)[0] if "/" in m else None
            a = self.authors.get(author or "")
            ow = r["open_weights"] if r else ""
            rows.append(
                {
                    "key": m,
                    "model_id": r["id"] if r else None,
                    "author": author if a else None,
                    "author_name": a["display_name"] if a else None,
                    "origin_group": a["origin_group"] if a else None,
                    "open_weights": {"true": True, "false": False}.get(ow),
                    "prompt_price": float(r["prompt_price"]) if r and r["prompt_price"] else None,
                    "completion_price": (
                        float(r["completion_price"]) if r and r["completion_price"] else None
                    ),
                    "created": int(r["created"]) if r and r["created"] else None,
                }
            )
        return pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA)
