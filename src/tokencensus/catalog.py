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
_FULL_DATE = re.compile(r"-20\d\d-?[01]\d-?[0-3]\d$")

#: Columns of a catalogue folder's ``models.csv`` (user overrides use the same header).
MODEL_COLUMNS = [
    "id",
    "canonical_slug",
    "name",
    "created",
    "prompt_price",
    "completion_price",
    "open_weights",
]

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
        w.writerow(MODEL_COLUMNS)
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


def undate(model: str) -> str:
    """Drop a full date suffix: ``openai/gpt-5-nano-2025-08-07`` -> ``openai/gpt-5-nano``.

    Only full dates (``YYYY-MM-DD`` or ``YYYYMMDD``) are dropped; a short ``-0528`` or
    ``-2507`` is part of many model names (DeepSeek R1 0528, Qwen3 2507) and is kept.
    """
    return _FULL_DATE.sub("", model)


class Catalog:
    """Look up author, origin, open weights and list price for a logged model name.

    Matching, in order (case-insensitive): the exact id; the canonical slug (what
    OpenRouter's activity export logs as ``model_permaslug``, often dated); the same
    without a variant suffix (``:free``, ``:thinking``, ``:extended``, ``:exacto``...);
    the same without a full date suffix; and a bare name without an author prefix when
    exactly one catalogue id ends with it. A non-variant row is preferred over a
    variant row (``:free`` rows carry price 0). Anything else is unknown: reported,
    never guessed.
    """

    def __init__(self, folder: Path | None = None) -> None:
        folder = Path(folder) if folder else SNAPSHOT_DIR
        if not (folder / "models.csv").exists() and any(folder.glob("openrouter-models-*.json")):
            raise ValueError(f"{folder}: run `tokencensus models build {folder}` first")
        if not (folder / "models.csv").exists():
            raise FileNotFoundError(f"{folder}: no models.csv (catalog_dir needs models.csv)")
        authors_csv = folder / "authors.csv"
        if not authors_csv.exists():
            authors_csv = SNAPSHOT_DIR / "authors.csv"
        self.authors = {
            r["author"].lower(): r for r in csv.DictReader(open(authors_csv, encoding="utf-8"))
        }
        rows = list(csv.DictReader(open(folder / "models.csv", encoding="utf-8")))
        for r in rows:
            r.setdefault("canonical_slug", r["id"])
            r["canonical_slug"] = r["canonical_slug"] or r["id"]
        # Plain rows first, so that a variant (":free", price 0) never shadows its base model.
        rows.sort(key=lambda r: ":" in r["id"])
        self.models: dict[str, dict] = {}
        for r in rows:
            self.models.setdefault(r["id"].lower(), r)
        for r in rows:
            self.models.setdefault(r["canonical_slug"].lower(), r)
        for r in rows:
            self.models.setdefault(strip_variant(r["id"]).lower(), r)
            self.models.setdefault(strip_variant(r["canonical_slug"]).lower(), r)
        self._undated: dict[str, dict] = {}
        for key, r in list(self.models.items()):
            self._undated.setdefault(undate(key), r)
        bare: dict[str, list[dict]] = {}
        for key, r in self.models.items():
            if "/" in key:
                bare.setdefault(key.split("/", 1)[1], []).append(r)
        self._bare = {k: v[0] for k, v in bare.items() if len({x["id"] for x in v}) == 1}

    def match(self, model: str | None) -> dict | None:
        """The catalogue row for ``model``, or ``None`` when it is not known."""
        if not model or not model.strip():
            return None
        m = model.strip().lower()
        base = strip_variant(m)
        for c in (m, base):
            if c in self.models:
                return self.models[c]
        for c in (undate(m), undate(base)):
            if c in self.models:
                return self.models[c]
            if c in self._undated:
                return self._undated[c]
        if "/" not in base:
            for c in (base, undate(base)):
                if c in self._bare:
                    return self._bare[c]
        return None

    def author_of(self, model: str, row: dict | None) -> str | None:
        """The author prefix of the matched row (or of the logged id, if it names a known author)."""
        for name in ((row or {}).get("id"), model):
            if name and "/" in name:
                a = strip_variant(name).split("/", 1)[0].lower()
                if a in self.authors:
                    return a
        return None

    def table(self, models: list[str]) -> pa.Table:
        """One row per distinct logged model; unknown ones keep nulls (and are reported)."""
        rows = []
        for m in sorted({m for m in models if m}):
            r = self.match(m)
            author = self.author_of(m, r)
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
