"""Read logs as users already have them into the canonical request schema.

Each format is a module with a :class:`Reader`; :func:`read` auto-detects the
format (``--format`` overrides), streams Arrow record batches of
:data:`~tokencensus.schema.REQUEST_SCHEMA`, and counts every bad record per
reason with its file and line instead of dropping it.
"""

from __future__ import annotations

import glob
import gzip
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

import pyarrow as pa

from tokencensus.schema import REQUEST_SCHEMA, conform

BATCH_ROWS = 65536
MAX_SHOWN_REJECTS = 20

REJECT_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string()),
        pa.field("line", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)


class IngestError(Exception):
    """A bad record under ``--strict``, or an unreadable input: one line, file and line named."""


@dataclass
class IngestReport:
    """What ingest saw: the format, rows read, rejects per reason, time span, models."""

    format: str = ""
    rows: int = 0
    rejects: Counter = field(default_factory=Counter)
    reject_rows: list[dict] = field(default_factory=list)
    first: datetime | None = None
    last: datetime | None = None
    models: set[str] = field(default_factory=set)
    multimodal_parts_skipped: int = 0

    def to_json(self) -> dict:
        """The ``ingest --json`` object."""
        return {
            "format": self.format,
            "rows": self.rows,
            "rejects": dict(self.rejects),
            "first": self.first.isoformat() if self.first else None,
            "last": self.last.isoformat() if self.last else None,
            "models": sorted(self.models),
        }

    def observe(self, batch: pa.RecordBatch) -> None:
        """Update counts, time span and models from one canonical batch."""
        import pyarrow.compute as pc

        self.rows += batch.num_rows
        if batch.num_rows == 0:
            return
        ts = batch.column("created_at")
        lo, hi = pc.min(ts).as_py(), pc.max(ts).as_py()
        if lo is not None:
            self.first = lo if self.first is None else min(self.first, lo)
            self.last = hi if self.last is None else max(self.last, hi)
        self.models.update(m for m in pc.unique(batch.column("model")).to_pylist() if m)

    def rejects_table(self) -> pa.Table:
        """Every recorded reject as a table (file, line, reason, detail)."""
        return pa.Table.from_pylist(self.reject_rows, schema=REJECT_SCHEMA)


@dataclass
class ReadContext:
    """Passed to readers: where rejects go, the column map, strictness."""

    report: IngestReport
    mapping: dict[str, str] = field(default_factory=dict)
    strict: bool = False

    def reject(self, file: str, line: int | None, reason: str, detail: str = "") -> None:
        """Count one bad record (or raise under ``--strict``). ``detail`` must hold no prompt text."""
        self.report.rejects[reason] += 1
        self.report.reject_rows.append(
            {"file": file, "line": line, "reason": reason, "detail": detail[:200]}
        )
        if self.strict:
            where = f"{file}:{line}" if line is not None else file
            raise IngestError(f"{where}: {reason}{': ' + detail if detail else ''}")


class Reader:
    """One log format. Subclasses set ``name`` and implement ``sniff`` and ``read``."""

    name = "base"
    #: Whether this format carries prompt text (activity CSVs do not).
    has_prompts = True

    def sniff(self, path: Path, head: bytes) -> bool:
        """Whether the first bytes of ``path`` look like this format."""
        return False

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        """Yield canonical record batches from ``path``."""
        raise NotImplementedError


def open_text(path: Path) -> IO[str]:
    """Open a possibly .gz/.zst-compressed file as UTF-8 text (bad bytes -> U+FFFD)."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace", newline="")


def open_binary(path: Path) -> IO[bytes]:
    """Open a possibly .gz/.zst-compressed file as decompressed bytes."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst") or name.endswith(".zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True)
    return open(path, "rb")


def read_head(path: Path, n: int = 65536) -> bytes:
    """The first ``n`` decompressed bytes, for format detection."""
    try:
        with open_binary(path) as f:
            return f.read(n)
    except (OSError, EOFError) as exc:
        raise IngestError(f"{path}: cannot read: {exc}") from exc


def readers() -> dict[str, Reader]:
    """All readers by name, in detection order (most specific first)."""
    from tokencensus.ingest import generic, openrouter

    found: list[Reader] = [
        openrouter.ActivityCSV(),
        openrouter.GenerationJSON(),
        generic.GenericJSONL(),
        generic.GenericCSV(),
        generic.GenericParquet(),
    ]
    return {r.name: r for r in found}


def expand(paths: list[str | Path]) -> list[Path]:
    """Globs and directories to a sorted list of files."""
    out: list[Path] = []
    for p in paths:
        s = str(p)
        matches = sorted(glob.glob(s, recursive=True)) if any(c in s for c in "*?[") else [s]
        if not matches:
            raise IngestError(f"{s}: no file matches")
        for m in matches:
            mp = Path(m)
            if mp.is_dir():
                out.extend(sorted(f for f in mp.rglob("*") if f.is_file()))
            elif mp.exists():
                out.append(mp)
            else:
                raise IngestError(f"{mp}: no such file")
    return out


def detect(path: Path) -> Reader:
    """The reader whose ``sniff`` accepts ``path``."""
    head = read_head(path)
    for reader in readers().values():
        if reader.sniff(path, head):
            return reader
    raise IngestError(f"{path}: unknown log format (use --format; known: {', '.join(readers())})")


def parse_map(spec: str | None) -> dict[str, str]:
    """``request_id=id,prompt_text=prompt`` -> {canonical: source}."""
    mapping: dict[str, str] = {}
    if not spec:
        return mapping
    names = set(REQUEST_SCHEMA.names)
    for part in spec.split(","):
        if "=" not in part:
            raise IngestError(f"--map: {part!r} is not canonical=source")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in names:
            raise IngestError(f"--map: {k!r} is not a canonical column ({', '.join(names)})")
        mapping[k] = v
    return mapping


def read(
    paths: list[str | Path],
    format: str | None = None,
    mapping: dict[str, str] | None = None,
    strict: bool = False,
    report: IngestReport | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream canonical batches from every file in ``paths``; fill ``report`` as it goes."""
    report = report if report is not None else IngestReport()
    ctx = ReadContext(report=report, mapping=mapping or {}, strict=strict)
    table = readers()
    for path in expand(paths):
        if format:
            if format not in table:
                raise IngestError(f"--format {format!r} unknown; known: {', '.join(table)}")
            reader = table[format]
        else:
            if path.stat().st_size == 0:
                ctx.reject(str(path), None, "empty_file")
                continue
            reader = detect(path)
        formats = set(report.format.split(",")) - {""}
        report.format = ",".join(sorted(formats | {reader.name}))
        try:
            for batch in reader.read(path, ctx):
                batch = conform(batch).combine_chunks().to_batches()
                for b in batch:
                    report.observe(b)
                    yield b
        except (EOFError, OSError) as exc:
            ctx.reject(str(path), None, "truncated_or_unreadable", str(exc)[:200])


def rows_to_batch(rows: list[dict]) -> pa.RecordBatch:
    """Canonical batch from canonical-keyed dicts (missing keys become nulls)."""
    return pa.RecordBatch.from_pylist(rows, schema=REQUEST_SCHEMA)
