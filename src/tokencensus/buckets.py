"""Map content-category paths to use-case buckets with editable rules.

Rules are TOML (see ``rules/study.toml``): longest matching path prefix wins,
sub-tags name the mix inside a bucket, and a classifier's direct bucket head
may decide where the taxonomy cannot (the rule set says whether it may).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from tokencensus.settings import PACKAGE_DIR

RULES_DIR = PACKAGE_DIR / "rules"

ASSIGNMENT_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("primary_bucket", pa.string(), nullable=False),
        pa.field("buckets", pa.list_(pa.string())),
        pa.field("subtag", pa.string()),
        pa.field("top_path", pa.string()),
        pa.field("confidence", pa.float32()),
        pa.field("decided_by", pa.string()),
    ]
)


@dataclass
class Rules:
    """A named rule set: ordered prefixes -> bucket, plus sub-tags per bucket."""

    name: str
    buckets: list[str]
    default: str
    rules: list[tuple[str, str]]
    subtags: dict[str, dict[str, str]] = field(default_factory=dict)
    use_bucket_head: bool = False
    description: str = ""

    @classmethod
    def load(cls, name_or_path: str | Path = "study") -> Rules:
        """Load a shipped rule set by name (``study``, ``openrouter``) or a TOML file."""
        path = Path(name_or_path)
        if not path.suffix:
            path = RULES_DIR / f"{name_or_path}.toml"
            if not path.exists():
                shipped = ", ".join(sorted(p.stem for p in RULES_DIR.glob("*.toml")))
                raise ValueError(f"unknown rule set {name_or_path!r}; shipped: {shipped}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"{path}: cannot read rules: {exc}") from exc
        for i, r in enumerate(data.get("rule", [])):
            if "prefix" not in r or "bucket" not in r:
                raise ValueError(f"{path}: rule #{i + 1} needs both 'prefix' and 'bucket'")
            if r["bucket"] not in data["buckets"]:
                raise ValueError(f"{path}: rule #{i + 1} names unknown bucket {r['bucket']!r}")
        rules = sorted(
            ((r["prefix"], r["bucket"]) for r in data.get("rule", [])),
            key=lambda pr: -len(pr[0]),
        )
        return cls(
            name=data.get("name", path.stem),
            buckets=list(data["buckets"]),
            default=data.get("default", data["buckets"][-1]),
            rules=rules,
            subtags=dict(data.get("subtags", {})),
            use_bucket_head=bool(data.get("use_bucket_head", False)),
            description=data.get("description", ""),
        )

    def bucket_of(self, path: str) -> str:
        """The bucket of one path: the longest matching prefix's, else the default."""
        for prefix, bucket in self.rules:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/") or prefix == "/":
                return bucket
        return self.default

    def subtag_of(self, bucket: str, paths: list[str]) -> str | None:
        """The sub-tag inside ``bucket`` for a request whose labels are ``paths`` (best first)."""
        table = self.subtags.get(bucket, {})
        for p in paths:
            for prefix, tag in table.items():
                if p.startswith(prefix):
                    return tag
        for p in paths:
            if self.bucket_of(p) == bucket:
                return "/".join(p.strip("/").split("/")[:2])
        return None

    def assign(
        self,
        labels: list[tuple[str, float]],
        bucket_scores: dict[str, float] | None = None,
        threshold: float = 0.5,
    ) -> dict:
        """Primary bucket, all buckets, sub-tag and who decided, for one request."""
        paths = [p for p, _ in labels]
        from_paths: dict[str, float] = {}
        for p, c in labels:
            b = self.bucket_of(p)
            from_paths[b] = max(from_paths.get(b, 0.0), c)
        known = {b: s for b, s in (bucket_scores or {}).items() if b in self.buckets}
        if self.use_bucket_head and known:
            primary = max(known, key=known.__getitem__)
            conf = known[primary]
            chosen = [b for b, s in sorted(known.items(), key=lambda x: -x[1]) if s >= threshold]
            decided = "bucket_head"
        elif from_paths:
            primary = max(from_paths, key=from_paths.__getitem__)
            conf = from_paths[primary]
            chosen = sorted(from_paths, key=lambda b: -from_paths[b])
            decided = "paths"
        else:
            primary, conf, chosen, decided = self.default, None, [], "no_label"
        if primary not in chosen:
            chosen = [primary, *chosen]
        return {
            "primary_bucket": primary,
            "buckets": chosen[:2],
            "subtag": self.subtag_of(primary, paths),
            "top_path": paths[0] if paths else None,
            "confidence": conf,
            "decided_by": decided,
        }


def assign_batch(predictions: pa.Table | pa.RecordBatch, rules: Rules) -> pa.Table:
    """Bucket assignments for a batch of classifier predictions (Arrow in, Arrow out)."""
    rows = []
    ids = predictions.column("request_id").to_pylist()
    labels = predictions.column("labels").to_pylist()
    scores = predictions.column("bucket_scores").to_pylist()
    for rid, labs, sc in zip(ids, labels, scores, strict=True):
        pairs = [(x["path"], x["confidence"]) for x in (labs or [])]
        rows.append({"request_id": rid, **rules.assign(pairs, dict(sc) if sc else None)})
    return pa.Table.from_pylist(rows, schema=ASSIGNMENT_SCHEMA)
