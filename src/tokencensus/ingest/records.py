"""Record-level plumbing shared by every reader.

Sources of records (JSON lines, JSON arrays parsed incrementally, CSV rows)
yield ``(line, record)`` and count what they cannot parse; :func:`batches_from`
turns records into canonical batches through a per-format ``convert`` function
and :func:`normalize`, which applies the same type rules to every format.

Reject reasons used here: ``malformed_json``, ``not_an_object``, ``bad_utf8``,
``malformed_csv``, ``short_row``, ``extra_columns``, ``missing_columns``,
``missing_request_id``, ``bad_timestamp``, ``bad_number``, ``wrong_type``,
``bad_messages``, ``invalid_record``, ``truncated_file``, ``unreadable_file``.
No reject detail ever carries a field value (prompt text stays private).
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from tokencensus.ingest import (
    BATCH_ROWS,
    ReadContext,
    open_binary,
    rows_to_batch,
    stream_errors,
    stream_reject,
)
from tokencensus.ingest.messages import messages_to_prompt
from tokencensus.schema import REQUEST_SCHEMA

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
INT_COLS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
STR_COLS = ("model", "provider", "user_key", "app", "finish_reason", "language")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class RecordError(ValueError):
    """A record that cannot become a canonical row; its message is the reject reason."""


class Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    """A well-formed record that is not a request (counted in ``report.skipped``)."""


# --- value coercion -------------------------------------------------------------------------


def parse_time(v: Any) -> datetime | None:
    """ISO 8601 / 'YYYY-MM-DD HH:MM:SS' / unix seconds or ms -> aware UTC datetime."""
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, tzinfo=UTC)
    if isinstance(v, bool):
        raise RecordError("bad_timestamp")
    if isinstance(v, int | float):
        try:
            return datetime.fromtimestamp(v / 1000 if abs(v) > 1e11 else v, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise RecordError("bad_timestamp") from None
    if isinstance(v, str):
        s = v.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                raise RecordError("bad_timestamp") from None
            if math.isnan(f) or math.isinf(f):
                raise RecordError("bad_timestamp") from None
            return parse_time(f)
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    raise RecordError("bad_timestamp")


def to_int(v: Any, limit: int = INT64_MAX) -> int | None:
    """Token counts: non-negative int, float or numeric string, or null; else ``bad_number``."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise RecordError("bad_number")
    if isinstance(v, int):
        if v < 0 or v > limit:
            raise RecordError("bad_number")
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise RecordError("bad_number") from None
    if math.isnan(f) or math.isinf(f) or f < 0 or f > limit:
        raise RecordError("bad_number")
    return int(f)


def to_float(v: Any) -> float | None:
    """Costs: a finite number or numeric string, or null; else ``bad_number``."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise RecordError("bad_number")
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise RecordError("bad_number") from None
    if math.isnan(f) or math.isinf(f):
        raise RecordError("bad_number")
    return f


def to_str(v: Any) -> str | None:
    """Labels: strings as they are, other JSON values as JSON text, empty as null."""
    if v is None or v == "":
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    try:
        return orjson.dumps(v).decode()
    except TypeError:
        return str(v)


def get_path(rec: Any, dotted: str) -> Any:
    """``a.b.c`` lookup in nested dicts (a key that itself holds dots is tried first)."""
    if isinstance(rec, dict) and dotted in rec:
        return rec[dotted]
    cur: Any = rec
    for key in dotted.split("."):
        if isinstance(cur, list) and key.isdigit() and int(key) < len(cur):
            cur = cur[int(key)]
            continue
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def maybe_json(v: Any) -> Any:
    """A JSON value stored as text (CSV exports, JSONB-as-text) back to Python; else as is."""
    if isinstance(v, str):
        s = v.strip()
        if s[:1] in ("{", "[") or s == "null":
            try:
                return orjson.loads(s)
            except orjson.JSONDecodeError:
                return v
    return v


def first(*values: Any) -> Any:
    """The first value that is neither None nor ''."""
    for v in values:
        if v is not None and v != "":
            return v
    return None


def normalize(row: dict) -> tuple[dict, int]:
    """Apply the canonical type rules to a row of raw values; (row, multimodal parts skipped)."""
    out: dict[str, Any] = {}
    rid = row.get("request_id")
    if rid is None or rid == "" or isinstance(rid, dict | list | bool):
        raise RecordError("missing_request_id")
    out["request_id"] = rid if isinstance(rid, str) else to_str(rid)
    out["created_at"] = parse_time(row.get("created_at"))
    for c in INT_COLS:
        out[c] = to_int(row.get(c))
    out["cost_usd"] = to_float(row.get("cost_usd"))
    for c in STR_COLS:
        out[c] = to_str(row.get(c))
    tc = row.get("tool_calls")
    out["tool_calls"] = len(tc) if isinstance(tc, list) else to_int(tc, INT32_MAX)
    skipped = int(row.get("_skipped") or 0)
    p = row.get("prompt_text")
    if p is not None and not isinstance(p, str):
        try:
            p, s = messages_to_prompt(p)
        except ValueError:
            raise RecordError("bad_messages") from None
        skipped += s
    out["prompt_text"] = p if p != "" else None
    return out, skipped


# --- record sources -------------------------------------------------------------------------


def _decode_reason(line: bytes) -> str:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "bad_utf8"
    return "malformed_json"


def iter_json_lines(
    path: Path, ctx: ReadContext, skip_records: int = 0
) -> Iterator[tuple[int, Any]]:
    """(line number, object) per non-blank line; bad lines are counted, never yielded.

    ``skip_records`` skips that many non-blank lines first (already read by a fast path).
    """
    lineno = 0
    try:
        with open_binary(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                if skip_records:
                    skip_records -= 1
                    continue
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    ctx.reject(str(path), lineno, _decode_reason(line))
                    continue
                if not isinstance(rec, dict):
                    ctx.reject(str(path), lineno, "not_an_object")
                    continue
                yield lineno, rec
    except stream_errors() as exc:
        stream_reject(ctx, path, lineno + 1, exc)


def iter_json_array(
    path: Path, ctx: ReadContext, prefix: str = "item", state: dict | None = None
) -> Iterator[tuple[int, Any]]:
    """Items of a (possibly huge) JSON array, parsed incrementally with ijson (memory flat).

    The position given for an item is its 1-based index in the array (line numbers are not
    known inside one JSON document); a syntax error ends the file with one reject.
    """
    import ijson

    index = 0
    try:
        with open_binary(path) as raw:
            try:
                for index, item in enumerate(ijson.items(raw, prefix, use_float=True), 1):
                    if not isinstance(item, dict):
                        ctx.reject(str(path), index, "not_an_object", "array item")
                        continue
                    yield index, item
            except (ijson.JSONError, UnicodeDecodeError):
                if state is not None and index == 0:  # not an array after all
                    state["not_array"] = True
                    return
                if state is not None and _one_per_line(path):
                    state["resume_after"] = index  # recount the rest line by line
                    return
                raise
    except (ijson.JSONError, UnicodeDecodeError) as exc:
        msg = str(exc)
        reason = (
            "bad_utf8"
            if isinstance(exc, UnicodeDecodeError) or "utf" in msg.lower()
            else ("malformed_json")
        )
        ctx.reject(str(path), index + 1, reason, "array item; parsing stopped here")
    except stream_errors() as exc:
        stream_reject(ctx, path, index + 1, exc)


def _one_per_line(path: Path) -> bool:
    """Whether a JSON array holds one item a line (``[`` then ``{...},`` lines)."""
    try:
        with open_binary(path) as f:
            head = f.read(1 << 20)
    except stream_errors():
        return False
    lines = [ln.strip() for ln in head.split(b"\n")[:20] if ln.strip() not in (b"", b"]")]
    if lines and lines[0] == b"[":
        lines = lines[1:]
    if lines and lines[0].startswith(b"["):
        lines[0] = lines[0][1:]
    ok = 0
    for ln in lines:
        try:
            orjson.loads(
                ln.rstrip(b",").removesuffix(b"]") if ln.endswith(b"}]") else ln.rstrip(b",")
            )
            ok += 1
        except orjson.JSONDecodeError:
            pass
    return bool(lines) and ok * 3 >= len(lines) * 2


def _array_lines(path: Path, ctx: ReadContext, skip_items: int) -> Iterator[tuple[int, Any]]:
    """The rest of a broken one-item-a-line JSON array, each line a record (a trailing comma
    and the array's brackets tolerated); the first ``skip_items`` items were already read."""
    lineno = 0
    try:
        with open_binary(path) as f:
            for lineno, line in enumerate(f, 1):
                t = line.strip()
                if lineno == 1 and t.startswith(b"[") and t != b"[":
                    t = t[1:].strip()
                if not t or t in (b"[", b"]"):
                    continue
                body = t.rstrip(b",")
                if body.endswith(b"}]"):  # the last item with the closing bracket
                    body = body[:-1]
                try:
                    rec = orjson.loads(body)
                except orjson.JSONDecodeError:
                    if skip_items == 0:
                        ctx.reject(str(path), lineno, _decode_reason(line))
                    continue
                if skip_items:
                    skip_items -= 1
                    continue
                if not isinstance(rec, dict):
                    ctx.reject(str(path), lineno, "not_an_object")
                    continue
                yield lineno, rec
    except stream_errors() as exc:
        stream_reject(ctx, path, lineno + 1, exc)


def looks_csv(path: Path, required: set[str]) -> bool:
    """A CSV whose header names ``required`` columns (else the file is read as JSON)."""
    from tokencensus.ingest import read_head

    try:
        head = read_head(path, 1 << 16)
    except stream_errors():
        return False
    first_line = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    cols = {c.strip().strip('"').lstrip("\ufeff") for c in first_line.split(",")}
    return required <= cols


def json_layout(path: Path) -> str:
    """'array', 'lines' or 'document' (one pretty-printed object, e.g. ``{"data": [...]}``)."""
    try:
        with open_binary(path) as f:
            head = f.read(1 << 20)
    except stream_errors():
        return "lines"
    h = head.lstrip()
    if h[:1] == b"[":
        return "array"
    if h[:1] != b"{":
        return "lines"
    lines = [ln for ln in h.split(b"\n")[:50] if ln.strip()]
    ok = 0
    for ln in lines:
        try:
            ok += isinstance(orjson.loads(ln), dict)
        except orjson.JSONDecodeError:
            pass
    # JSON lines: most lines are whole objects; a pretty-printed document: almost none.
    return (
        "lines"
        if ok and (ok * 2 >= min(len(lines), 49) or lines[0].rstrip()[-1:] == b"}")
        else "document"
    )


def iter_json_records(
    path: Path, ctx: ReadContext, wrapper_key: str = "data"
) -> Iterator[tuple[int, Any]]:
    """Objects from JSON lines, a JSON array, or a ``{"data": [...]}`` API response."""
    layout = json_layout(path)
    if layout == "array":
        state: dict = {}
        yield from iter_json_array(path, ctx, "item", state)
        if state.get("not_array"):  # e.g. JSON lines whose first line is garbage
            yield from iter_json_lines(path, ctx)
        elif "resume_after" in state:  # a one-item-a-line array broken part way
            yield from _array_lines(path, ctx, state["resume_after"])
    elif layout == "document":
        with open_binary(path) as f:
            head = f.read(1 << 20)
            small = len(head) < (1 << 20)
        if small:  # one small document: an API response, a single object, or data: [...]
            try:
                doc = orjson.loads(head)
            except orjson.JSONDecodeError:  # not one document after all: lines, some bad
                yield from iter_json_lines(path, ctx)
                return
            items = doc.get(wrapper_key) if isinstance(doc, dict) else None
            if isinstance(items, list):
                for i, item in enumerate(items, 1):
                    if isinstance(item, dict):
                        yield i, item
                    else:
                        ctx.reject(str(path), i, "not_an_object", "array item")
            elif isinstance(doc, dict):
                yield 1, doc
            else:
                ctx.reject(str(path), 1, "not_an_object")
        else:
            yield from iter_json_array(path, ctx, f"{wrapper_key}.item")
    else:
        yield from iter_json_lines(path, ctx)


def _csv_lines(f, counter: list[int]):
    for raw in f:
        counter[0] += 1
        yield raw.decode("utf-8", "surrogateescape")


def _has_surrogate(values: Iterable[Any]) -> bool:
    for v in values:
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def iter_csv_records(
    path: Path, ctx: ReadContext, required: set[str] | None = None, skip_records: int = 0
) -> Iterator[tuple[int, dict]]:
    """(line number, row dict) per CSV record; header names are stripped (a BOM too)."""
    counter = [0]
    lineno = 0
    try:
        with open_binary(path) as f:
            reader = csv.reader(_csv_lines(f, counter))
            try:
                header = next(reader)
            except StopIteration:
                return
            except csv.Error:
                ctx.reject(str(path), 1, "malformed_csv", "header")
                return
            header = [h.strip().lstrip("\ufeff") for h in header]
            if required and (missing := required - set(header)):
                ctx.reject(str(path), 1, "missing_columns", ", ".join(sorted(missing)))
                return
            ncol = len(header)
            while True:
                start = counter[0] + 1
                try:
                    values = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    ctx.reject(str(path), start, "malformed_csv", str(exc)[:80])
                    continue
                lineno = start
                if not values or (len(values) == 1 and not values[0].strip()):
                    continue
                if skip_records:  # already read by a fast path
                    skip_records -= 1
                    continue
                if _has_surrogate(values):
                    ctx.reject(str(path), lineno, "bad_utf8")
                    continue
                if len(values) > ncol:
                    ctx.reject(str(path), lineno, "extra_columns", f"{len(values)} > {ncol}")
                    continue
                if len(values) < ncol:
                    ctx.reject(str(path), lineno, "short_row", f"{len(values)} < {ncol}")
                    continue
                yield lineno, dict(zip(header, values, strict=True))
    except stream_errors() as exc:
        stream_reject(ctx, path, counter[0] + 1, exc)


# --- records to batches ---------------------------------------------------------------------

Convert = Callable[[dict], dict]


def batches_from(
    records: Iterable[tuple[int, Any]],
    path: Path | str,
    ctx: ReadContext,
    convert: Convert,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Canonical batches from ``(line, record)`` pairs through ``convert`` and :func:`normalize`.

    ``convert`` returns a dict of raw canonical values (``_skipped`` may carry a count of
    non-text parts), raises :class:`RecordError` (a reject) or :class:`Skip` (not a request).
    Any other exception from a malformed record is counted as ``invalid_record``.
    """
    rows: list[dict] = []
    for line, rec in records:
        try:
            row, skipped = normalize(convert(rec))
        except RecordError as exc:
            ctx.reject(str(path), line, str(exc))
            continue
        except Skip as exc:
            ctx.skip(str(exc) or "not_a_request")
            continue
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError) as exc:
            ctx.reject(str(path), line, "invalid_record", type(exc).__name__)
            continue
        ctx.report.multimodal_parts_skipped += skipped
        rows.append(row)
        if len(rows) >= batch_rows:
            yield rows_to_batch(rows)
            rows = []
    if rows:
        yield rows_to_batch(rows)


def empty_schema_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=REQUEST_SCHEMA)
