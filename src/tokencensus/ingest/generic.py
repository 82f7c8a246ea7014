"""Generic JSONL, CSV and Parquet logs, with a column map (canonical name = source field)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from tokencensus.ingest import BATCH_ROWS, ReadContext, Reader, open_text, rows_to_batch
from tokencensus.ingest.messages import messages_to_prompt
from tokencensus.schema import REQUEST_SCHEMA

# Common source names for each canonical column, tried in order when no map is given.
ALIASES: dict[str, list[str]] = {
    "request_id": ["request_id", "id", "generation_id", "custom_id", "uuid"],
    "created_at": ["created_at", "timestamp", "time", "datetime_utc", "startTime", "created"],
    "model": ["model", "model_permaslug", "engine"],
    "provider": ["provider", "provider_name", "custom_llm_provider"],
    "prompt_tokens": ["prompt_tokens", "tokens_prompt", "input_tokens"],
    "completion_tokens": ["completion_tokens", "tokens_completion", "output_tokens"],
    "reasoning_tokens": ["reasoning_tokens", "tokens_reasoning", "native_tokens_reasoning"],
    "cached_tokens": ["cached_tokens", "tokens_cached", "native_tokens_cached"],
    "cost_usd": ["cost_usd", "cost", "cost_total", "total_cost", "spend"],
    "user_key": ["user_key", "user", "user_id", "end_user", "external_user"],
    "app": ["app", "app_name", "app_id"],
    "finish_reason": ["finish_reason", "finish_reason_normalized"],
    "language": ["language", "lang"],
    "tool_calls": ["tool_calls"],
    "prompt_text": ["prompt_text", "prompt", "messages", "text", "input"],
}

INT_COLS = {"prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens"}


class RecordError(ValueError):
    """A record that cannot become a canonical row; its message is the reject reason."""


def parse_time(v: Any) -> datetime | None:
    """ISO 8601 / 'YYYY-MM-DD HH:MM:SS' / unix seconds -> aware UTC datetime."""
    if v is None or v == "":
        return None
    if isinstance(v, int | float) and not isinstance(v, bool):
        return datetime.fromtimestamp(v / 1000 if v > 1e11 else v, tz=UTC)
    if isinstance(v, str):
        s = v.strip().replace("Z", "+00:00")
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            try:
                return parse_time(float(s))
            except ValueError:
                raise RecordError("bad_timestamp") from None
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    raise RecordError("bad_timestamp")


def to_int(v: Any) -> int | None:
    """Token counts: int, numeric string or null; anything else is a bad record."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise RecordError("bad_number")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise RecordError("bad_number") from None
    if f != f or f < 0:
        raise RecordError("bad_number")
    return int(f)


def to_float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise RecordError("bad_number")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise RecordError("bad_number") from None


def get_path(rec: dict, dotted: str) -> Any:
    """``a.b.c`` lookup in nested dicts."""
    cur: Any = rec
    for key in dotted.split("."):
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def canonical_row(rec: dict, mapping: dict[str, str]) -> tuple[dict, int]:
    """One canonical row from a flat or nested record; (row, multimodal parts skipped)."""
    row: dict[str, Any] = {}
    for col in REQUEST_SCHEMA.names:
        if col in mapping:
            v = get_path(rec, mapping[col])
        else:
            v = next((rec[a] for a in ALIASES.get(col, [col]) if a in rec), None)
        row[col] = v
    skipped = 0
    if row["request_id"] is None or row["request_id"] == "":
        raise RecordError("missing_request_id")
    row["request_id"] = str(row["request_id"])
    row["created_at"] = parse_time(row["created_at"])
    for c in INT_COLS:
        row[c] = to_int(row[c])
    row["cost_usd"] = to_float(row["cost_usd"])
    tc = row["tool_calls"]
    row["tool_calls"] = len(tc) if isinstance(tc, list) else to_int(tc)
    for c in ("model", "provider", "user_key", "app", "finish_reason", "language"):
        if row[c] is not None:
            row[c] = str(row[c])
    p = row["prompt_text"]
    if p is not None and not isinstance(p, str):
        try:
            row["prompt_text"], skipped = messages_to_prompt(p)
        except ValueError as exc:
            raise RecordError("bad_messages") from exc
    return row, skipped


class GenericJSONL(Reader):
    """Any JSON-lines log: one object a line, columns found by alias or ``--map``."""

    name = "jsonl"

    def sniff(self, path: Path, head: bytes) -> bool:
        return head.lstrip()[:1] == b"{"

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        yield from read_json_lines(path, ctx, lambda rec: canonical_row(rec, ctx.mapping))


def read_json_lines(path: Path, ctx: ReadContext, convert) -> Iterator[pa.RecordBatch]:
    """Shared JSONL loop: parse each line, ``convert`` it, reject what fails."""
    rows: list[dict] = []
    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                ctx.reject(str(path), lineno, "malformed_json")
                continue
            if not isinstance(rec, dict):
                ctx.reject(str(path), lineno, "not_an_object")
                continue
            try:
                row, skipped = convert(rec)
            except RecordError as exc:
                ctx.reject(str(path), lineno, str(exc))
                continue
            if row is None:
                continue
            ctx.report.multimodal_parts_skipped += skipped
            rows.append(row)
            if len(rows) >= BATCH_ROWS:
                yield rows_to_batch(rows)
                rows = []
    if rows:
        yield rows_to_batch(rows)


class GenericCSV(Reader):
    """Any CSV with a header row; columns found by alias or ``--map``."""

    name = "csv"

    def sniff(self, path: Path, head: bytes) -> bool:
        first = head.split(b"\n", 1)[0]
        return b"," in first and not head.lstrip().startswith((b"{", b"["))

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        rows: list[dict] = []
        with open_text(path) as f:
            reader = csv.DictReader(f)
            for rec in reader:
                lineno = reader.line_num
                if None in rec:
                    ctx.reject(str(path), lineno, "extra_columns")
                    continue
                try:
                    row, _ = canonical_row(rec, ctx.mapping)
                except RecordError as exc:
                    ctx.reject(str(path), lineno, str(exc))
                    continue
                rows.append(row)
                if len(rows) >= BATCH_ROWS:
                    yield rows_to_batch(rows)
                    rows = []
        if rows:
            yield rows_to_batch(rows)


class GenericParquet(Reader):
    """Parquet with canonical or aliased columns; read column-wise, never row by row."""

    name = "parquet"

    def sniff(self, path: Path, head: bytes) -> bool:
        return head[:4] == b"PAR1"

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        select: dict[str, str] = {}
        for col in REQUEST_SCHEMA.names:
            src = ctx.mapping.get(col) or next(
                (a for a in ALIASES.get(col, [col]) if a in names), None
            )
            if src in names:
                select[col] = src
        if "request_id" not in select:
            ctx.reject(str(path), None, "missing_request_id", "no request id column")
            return
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=sorted(set(select.values()))):
            arrays, fields = [], []
            for col, src in select.items():
                arr = batch.column(src)
                target = REQUEST_SCHEMA.field(col).type
                if col == "created_at" and pa.types.is_timestamp(arr.type) and arr.type.tz is None:
                    arr = arr.cast(pa.timestamp(arr.type.unit, tz="UTC"))
                if col == "prompt_text" and not pa.types.is_string(arr.type):
                    arr = pa.array(
                        [
                            messages_to_prompt(v)[0] if v is not None else None
                            for v in arr.to_pylist()
                        ],
                        pa.string(),
                    )
                try:
                    arr = arr.cast(target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    ctx.reject(str(path), None, "wrong_type", f"column {src}: {arr.type}")
                    return
                arrays.append(arr)
                fields.append(col)
            yield pa.RecordBatch.from_arrays(arrays, names=fields)
