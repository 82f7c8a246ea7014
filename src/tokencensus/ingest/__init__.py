"""Read logs as users already have them into the canonical request schema.

Each format is a module with a :class:`Reader`; :func:`read` auto-detects the
format (``--format`` overrides), streams Arrow record batches of
:data:`~tokencensus.schema.REQUEST_SCHEMA`, and counts every bad record per
reason with its file and line instead of dropping it.

A "path" is a file, a glob, a directory (read recursively), a ``.gz``/``.zst``
file, or a ``postgresql://`` DSN (the LiteLLM spend-logs table).
"""

from __future__ import annotations

import glob
import gzip
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

import pyarrow as pa

from tokencensus.schema import REQUEST_SCHEMA, conform  # noqa: F401 - re-exported

BATCH_ROWS = 65536
MAX_SHOWN_REJECTS = 20
#: How many reject rows are kept in memory (all are counted).
MAX_KEPT_REJECTS = 10000

REJECT_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string()),
        pa.field("line", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)

DSN_PREFIXES = ("postgresql://", "postgres://")


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
    #: Records that are well-formed but are not requests (e.g. Langfuse SPAN
    #: observations, batch inputs with no output), counted per reason.
    skipped: Counter = field(default_factory=Counter)

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

    def observe(self, batch: pa.RecordBatch, raw: pa.RecordBatch | None = None) -> None:
        """Update counts, time span and models from one canonical batch.

        ``raw`` is the reader's batch before the canonical cast: where its ``model`` column is
        dictionary-encoded (Parquet), the distinct models come from the indices, not the strings.
        """
        import pyarrow.compute as pc

        self.rows += batch.num_rows
        if batch.num_rows == 0:
            return
        mm = pc.min_max(batch.column("created_at"))
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if lo is not None:
            self.first = lo if self.first is None else min(self.first, lo)
            self.last = hi if self.last is None else max(self.last, hi)
        src = raw.column("model") if raw is not None and "model" in raw.schema.names else None
        if src is not None and pa.types.is_dictionary(src.type):
            models = src.dictionary.take(pc.unique(src.indices).drop_null())
        else:
            models = pc.unique(batch.column("model"))
        self.models.update(m for m in models.to_pylist() if m)

    def rejects_table(self) -> pa.Table:
        """Every recorded reject as a table (file, line, reason, detail)."""
        return pa.Table.from_pylist(self.reject_rows, schema=REJECT_SCHEMA)

    @property
    def total_rejects(self) -> int:
        return sum(self.rejects.values())


@dataclass
class ReadContext:
    """Passed to readers: where rejects go, the column map, strictness."""

    report: IngestReport
    mapping: dict[str, str] = field(default_factory=dict)
    strict: bool = False

    def reject(self, file: str, line: int | None, reason: str, detail: str = "") -> None:
        """Count one bad record (or raise under ``--strict``). ``detail`` must hold no prompt text."""
        file = display_name(file)
        self.report.rejects[reason] += 1
        if len(self.report.reject_rows) < MAX_KEPT_REJECTS:
            self.report.reject_rows.append(
                {"file": file, "line": line, "reason": reason, "detail": detail[:200]}
            )
        if self.strict:
            where = f"{file}:{line}" if line is not None else file
            raise IngestError(f"{where}: {reason}{': ' + detail if detail else ''}")

    def skip(self, reason: str, n: int = 1) -> None:
        """Count well-formed records that are not requests (never an error)."""
        self.report.skipped[reason] += n


class Reader:
    """One log format. Subclasses set ``name`` and implement ``sniff`` and ``read``."""

    name = "base"
    #: Whether this format carries prompt text (activity CSVs do not).
    has_prompts = True
    #: Whether this reader takes a ``postgresql://`` DSN instead of files.
    takes_dsn = False

    def sniff(self, path: Path, head: bytes) -> bool:
        """Whether the first bytes of ``path`` look like this format."""
        return False

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        """Yield canonical record batches from ``path``."""
        raise NotImplementedError

    def read_group(self, paths: list[Path], ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        """All files detected as this format at once; formats whose files pair up
        (OpenAI batch input + output, Langfuse traces + observations) override it."""
        for path in paths:
            yield from guarded(path, ctx, self.read(path, ctx))


def display_name(name: str | Path) -> str:
    """A file name for messages; a DSN loses its password."""
    s = str(name)
    if s.startswith(DSN_PREFIXES):
        s = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", s)
    return s


def is_dsn(p: str | Path) -> bool:
    return isinstance(p, str) and p.startswith(DSN_PREFIXES)


def open_text(path: Path) -> IO[str]:
    """Open a possibly .gz/.zst-compressed file as UTF-8 text (bad bytes -> U+FFFD)."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace", newline="")


def open_binary(path: Path) -> IO[bytes]:
    """Open a possibly .gz/.zst-compressed file as decompressed bytes."""
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst") or name.endswith(".zstd"):
        return io.BufferedReader(_ZstdRaw(open(path, "rb")), buffer_size=1 << 20)
    return open(path, "rb")


class _ZstdRaw(io.RawIOBase):
    """Multi-frame zstd decompression that raises EOFError on a truncated last frame
    (the library's stream reader ends quietly instead)."""

    def __init__(self, f):
        import zstandard

        self._zstd = zstandard
        self._f = f
        self._d = zstandard.ZstdDecompressor().decompressobj()
        self._buf = b""
        self._started = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            chunk = self._f.read(1 << 20)
            if not chunk:
                if self._started and not self._d.eof:
                    raise EOFError("zstd stream ended before the end of its frame")
                return 0
            while chunk:
                if self._d.eof:
                    self._d = self._zstd.ZstdDecompressor().decompressobj()
                self._started = True
                self._buf += self._d.decompress(chunk)
                chunk = self._d.unused_data if self._d.eof else b""
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def compression(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        return "gzip"
    if name.endswith((".zst", ".zstd")):
        return "zstd"
    return None


def stream_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a damaged compressed stream raises while being read."""
    errs: list[type[BaseException]] = [EOFError, OSError, gzip.BadGzipFile]
    try:
        import zlib

        errs.append(zlib.error)
    except ImportError:  # pragma: no cover
        pass
    try:
        import zstandard

        errs.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def stream_reject(ctx: ReadContext, path: Path | str, line: int | None, exc: BaseException) -> None:
    """One reject for a file that stops being readable part way (truncated .gz, I/O error)."""
    reason = "truncated_file" if isinstance(exc, EOFError) else "unreadable_file"
    if "zstd" in type(exc).__module__.lower() or "Zstd" in type(exc).__name__:
        reason = "truncated_file"
    ctx.reject(str(path), line, reason, f"{type(exc).__name__}: {str(exc)[:120]}")


def guarded(path: Path | str, ctx: ReadContext, batches: Iterator[pa.RecordBatch]):
    """Turn a damaged stream part way through a file into one counted reject."""
    try:
        yield from batches
    except stream_errors() as exc:
        stream_reject(ctx, path, None, exc)


def read_head(path: Path, n: int = 65536) -> bytes:
    """The first ``n`` decompressed bytes, for format detection (b"" if unreadable)."""
    with open_binary(path) as f:
        return f.read(n)


def readers() -> dict[str, Reader]:
    """All readers by name, in detection order (most specific first)."""
    from tokencensus.ingest import (
        chats,
        generic,
        langfuse,
        litellm,
        llm_sqlite,
        openai,
        openrouter,
    )

    found: list[Reader] = [
        litellm.LiteLLMPostgres(),
        llm_sqlite.LLMLogsDB(),
        openrouter.ActivityCSV(),
        openrouter.GenerationJSON(),
        litellm.LiteLLMExport(),
        langfuse.LangfuseExport(),
        openai.OpenAIBatch(),
        openai.OpenAIChat(),
        chats.WildChat(),
        chats.LMSYSChat(),
        chats.ShareGPT(),
        generic.GenericJSONL(),
        generic.GenericParquet(),
        generic.GenericCSV(),
    ]
    return {r.name: r for r in found}


def expand(paths: list[str | Path]) -> list[Path]:
    """Globs and directories to a sorted list of files (``postgresql://`` DSNs pass through
    as strings). Hidden files inside directories are left out."""
    out: list = []
    for p in paths:
        s = str(p)
        if is_dsn(s):
            out.append(s)
            continue
        matches = sorted(glob.glob(s, recursive=True)) if any(c in s for c in "*?[") else [s]
        if not matches:
            raise IngestError(f"{s}: no file matches")
        for m in matches:
            mp = Path(m)
            if mp.is_dir():
                out.extend(
                    sorted(
                        f
                        for f in mp.rglob("*")
                        if f.is_file()
                        and not any(part.startswith(".") for part in f.relative_to(mp).parts)
                    )
                )
            elif mp.exists():
                out.append(mp)
            else:
                raise IngestError(f"{mp}: no such file")
    return out


def detect(path: Path, head: bytes | None = None) -> Reader:
    """The reader whose ``sniff`` accepts ``path``."""
    if head is None:
        head = read_head(path)
    for reader in readers().values():
        if reader.takes_dsn:
            continue
        try:
            if reader.sniff(path, head):
                return reader
        except Exception:  # a sniff must never break detection
            continue
    raise IngestError(f"{path}: unknown log format (use --format; known: {', '.join(readers())})")


def parse_map(spec: str | None) -> dict[str, str]:
    """``request_id=id,prompt_text=prompt`` -> {canonical: source}."""
    mapping: dict[str, str] = {}
    if not spec:
        return mapping
    names = set(REQUEST_SCHEMA.names)
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise IngestError(f"--map: {part!r} is not canonical=source")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in names:
            raise IngestError(
                f"--map: {k!r} is not a canonical column ({', '.join(sorted(names))})"
            )
        if not v:
            raise IngestError(f"--map: {k!r} has no source field")
        mapping[k] = v
    return mapping


def _plan(paths: list, format: str | None, ctx: ReadContext) -> list[tuple[Reader, list]]:
    """Assign each input to a reader; group consecutive... all files of one reader together,
    in the order formats are first seen."""
    table = readers()
    if format and format not in table:
        raise IngestError(f"--format {format!r} unknown; known: {', '.join(table)}")
    groups: dict[str, list] = {}
    for path in paths:
        if is_dsn(path):
            reader = table[format] if format else table["litellm-pg"]
            if not reader.takes_dsn:
                raise IngestError(f"--format {reader.name} cannot read a database DSN")
            groups.setdefault(reader.name, []).append(path)
            continue
        try:
            if path.stat().st_size == 0:
                ctx.reject(str(path), None, "empty_file")
                continue
            head = read_head(path)
        except stream_errors() as exc:
            if format:
                groups.setdefault(format, []).append(path)  # let the reader count it precisely
                continue
            stream_reject(ctx, path, None, exc)
            continue
        if not head.strip():
            ctx.reject(str(path), None, "empty_file")
            continue
        if format:
            groups.setdefault(format, []).append(path)
            continue
        try:
            reader = detect(path, head)
        except IngestError:
            ctx.reject(str(path), None, "unknown_format", "use --format")
            continue
        groups.setdefault(reader.name, []).append(path)
    return [(table[name], files) for name, files in groups.items()]


#: Formats whose files are read together (their records refer to each other's).
GROUPED_FORMATS = ("openai-batch", "langfuse")


def units(paths: list[str | Path], format: str | None = None) -> list[list]:
    """``expand(paths)`` split into the units a caller that reads file by file (``run``, with
    its per-file resume) must read with one :func:`read` call each: OpenAI batch input and
    output files in the same directory, and Langfuse trace and observation files in the same
    directory, stay together (a pair read apart loses the join); every other file (or DSN)
    is a unit of its own. Order follows ``expand``; detection errors are left to ``read``."""
    table = readers()
    out: list[list] = []
    grouped: dict[tuple[str, str], list] = {}
    for path in expand(paths):
        name = None
        if not is_dsn(path):
            if format:
                name = format
            else:
                try:
                    head = read_head(path)
                    name = detect(path, head).name if head.strip() else None
                except (IngestError, *stream_errors()):
                    name = None
        if name in GROUPED_FORMATS and name in table:
            key = (name, str(Path(path).parent))
            if key not in grouped:
                grouped[key] = []
                out.append(grouped[key])
            grouped[key].append(path)
        else:
            out.append([path])
    return out


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
    plan = _plan(expand(paths), format, ctx)
    for reader, files in plan:
        formats = set(report.format.split(",")) - {""}
        report.format = ",".join(sorted(formats | {reader.name}))
        for batch in reader.read_group(files, ctx):
            if batch.num_rows == 0:
                continue
            b = canonical_batch(batch)
            report.observe(b, raw=batch)
            yield b


_NULLS: dict[tuple[int, str], pa.Array] = {}


def _nulls(n: int, typ: pa.DataType) -> pa.Array:
    """An all-null array, cached by length and type (arrays are immutable; batches of one
    stream mostly share a length, so a missing column costs nothing after the first)."""
    key = (n, str(typ))
    arr = _NULLS.get(key)
    if arr is None:
        if len(_NULLS) > 64:
            _NULLS.clear()
        arr = _NULLS[key] = pa.nulls(n, typ)
    return arr


def canonical_batch(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    """``batch`` with exactly the canonical columns, in order and type, as one record batch
    (what :func:`tokencensus.schema.conform` does, without re-allocating null columns)."""
    if isinstance(batch, pa.Table):
        if batch.num_rows == 0:
            return pa.RecordBatch.from_pylist([], schema=REQUEST_SCHEMA)
        batch = batch.combine_chunks().to_batches()[0]
    if batch.schema.equals(REQUEST_SCHEMA):
        return batch
    n = batch.num_rows
    names = batch.schema.names
    cols = []
    for f in REQUEST_SCHEMA:
        if f.name in names:
            col = batch.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(_nulls(n, f.type))
    return pa.RecordBatch.from_arrays(cols, schema=REQUEST_SCHEMA)


def rows_to_batch(rows: list[dict]) -> pa.RecordBatch:
    """Canonical batch from canonical-keyed dicts (missing keys become nulls)."""
    return pa.RecordBatch.from_pylist(rows, schema=REQUEST_SCHEMA)
