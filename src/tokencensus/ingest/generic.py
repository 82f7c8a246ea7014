"""Generic JSONL, CSV and Parquet logs, with a column map (canonical name = source field).

Without ``--map`` each canonical column takes the first alias in :data:`ALIASES` that a
record has (non-null). ``--map`` names the source field; a dotted name (``usage.input``)
reaches into nested objects (JSON) or struct columns (Parquet).

JSON lines are read by DuckDB (``read_json`` with explicit columns, multi-threaded) into
the canonical schema, prompts included. When DuckDB meets anything it will not convert
(a malformed line, a wrong type, a missing id, bad UTF-8, a truncated .gz), the rows it
already produced stand and the rest of the file is re-read line by line in Python, which
rejects each bad record precisely; both paths apply the same rules.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tokencensus.ingest import ReadContext, Reader, compression, open_binary, stream_errors
from tokencensus.ingest.messages import messages_to_prompt
from tokencensus.ingest.records import (  # noqa: F401 - re-exported for other readers
    INT_COLS,
    RecordError,
    Skip,
    batches_from,
    get_path,
    iter_csv_records,
    iter_json_lines,
    normalize,
    parse_time,
    to_float,
    to_int,
    to_str,
)
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


def sources(col: str, mapping: dict[str, str]) -> list[str]:
    """Source field names for a canonical column: the mapped one, else its aliases."""
    return [mapping[col]] if col in mapping else ALIASES.get(col, [col])


def canonical_row(rec: dict, mapping: dict[str, str]) -> tuple[dict, int]:
    """One canonical row from a flat or nested record; (row, multimodal parts skipped)."""
    return normalize(pick(rec, mapping))


def pick(rec: dict, mapping: dict[str, str]) -> dict:
    """Raw canonical values: the mapped field, else the first alias present and non-null."""
    row: dict[str, Any] = {}
    for col in REQUEST_SCHEMA.names:
        if col in mapping:
            row[col] = get_path(rec, mapping[col])
        else:
            row[col] = next(
                (rec[a] for a in ALIASES.get(col, [col]) if rec.get(a) is not None), None
            )
    return row


# --- JSON lines ------------------------------------------------------------------------------


class GenericJSONL(Reader):
    """Any JSON-lines log: one object a line, columns found by alias or ``--map``."""

    name = "jsonl"

    def sniff(self, path: Path, head: bytes) -> bool:
        return head.lstrip()[:1] == b"{"

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        done = 0
        small = path.stat().st_size < DUCKDB_MIN_BYTES
        plan = None if small else duckdb_plan(path, ctx.mapping)
        if plan is not None:
            try:
                for batch in duckdb_jsonl(path, plan, ctx):
                    done += batch.num_rows
                    yield batch
                return
            except DuckFallback:
                pass  # re-read the rest precisely in Python
        convert = _python_convert(ctx.mapping)
        yield from batches_from(iter_json_lines(path, ctx, skip_records=done), path, ctx, convert)


def _python_convert(mapping: dict[str, str]):
    def convert(rec: dict) -> dict:
        return pick(rec, mapping)

    return convert


def read_json_lines(path: Path, ctx: ReadContext, convert) -> Iterator[pa.RecordBatch]:
    """Shared JSONL loop for readers whose ``convert`` returns ``(row, skipped)`` (compat)."""

    def wrapped(rec: dict) -> dict:
        row, skipped = convert(rec)
        if row is None:
            raise Skip("not_a_request")
        return {**row, "_skipped": skipped}

    yield from batches_from(iter_json_lines(path, ctx), path, ctx, wrapped)


#: Files smaller than this skip DuckDB (its start-up costs more than it saves).
DUCKDB_MIN_BYTES = 4 << 20


class DuckFallback(Exception):  # noqa: N818
    """DuckDB refused part of a file; the Python path takes over from there."""


# Content is read as VARCHAR (DuckDB turns a nested value into its JSON text): several
# times faster than JSON. A content string that is a JSON array of strings / objects with a
# "type", or one object with a "type", is taken as content parts (see tc_vtext).
MESSAGE_STRUCT = 'STRUCT(role VARCHAR, "from" VARCHAR, content VARCHAR, value VARCHAR)[]'

_MACROS = r"""
CREATE OR REPLACE MACRO tc_part(p) AS CASE
  WHEN json_type(p) = 'VARCHAR' THEN p->>'$'
  WHEN json_type(p) = 'OBJECT' AND ((p->>'type') IN ('text', 'input_text', 'output_text')
       OR (json_exists(p, '$.text') AND NOT json_exists(p, '$.type')))
       THEN CASE WHEN json_type(p, '$.text') = 'VARCHAR' THEN p->>'text' END
  END;
CREATE OR REPLACE MACRO tc_is_text(p) AS json_type(p) = 'VARCHAR' OR (json_type(p) = 'OBJECT'
  AND ((p->>'type') IN ('text', 'input_text', 'output_text')
       OR (json_exists(p, '$.text') AND NOT json_exists(p, '$.type'))));
CREATE OR REPLACE MACRO tc_parts(c) AS CASE json_type(c)
  WHEN 'ARRAY' THEN json_extract(c, '$[*]') WHEN 'OBJECT' THEN [c] END;
CREATE OR REPLACE MACRO tc_content(c) AS CASE
  WHEN c IS NULL THEN NULL
  WHEN json_type(c) = 'VARCHAR' THEN c->>'$'
  WHEN json_type(c) IN ('ARRAY', 'OBJECT') THEN array_to_string(
       list_filter(list_transform(tc_parts(c), lambda p: tc_part(p)), lambda x: x IS NOT NULL),
       chr(10))
  WHEN json_type(c) = 'NULL' THEN NULL
  ELSE CAST(c AS VARCHAR) END;
CREATE OR REPLACE MACRO tc_nontext(c) AS CASE WHEN json_type(c) IN ('ARRAY', 'OBJECT')
  THEN len(list_filter(tc_parts(c), lambda p: NOT coalesce(tc_is_text(p), false))) ELSE 0 END;
CREATE OR REPLACE MACRO tc_looks_parts(c) AS CASE
  WHEN left(c, 1) = '[' AND json_valid(c) THEN json_array_length(c) > 0 AND
       len(list_filter(json_extract(c, '$[*]'), lambda p: json_type(p) = 'VARCHAR'
           OR (json_type(p) = 'OBJECT' AND json_exists(p, '$.type'))))
       = json_array_length(c)
  WHEN left(c, 1) = '{' AND json_valid(c) THEN json_exists(c, '$.type')
  ELSE false END;
CREATE OR REPLACE MACRO tc_vtext(c) AS CASE WHEN c IS NULL THEN NULL
  WHEN left(c, 1) IN ('[', '{') AND tc_looks_parts(c) THEN tc_content(CAST(c AS JSON))
  ELSE c END;
CREATE OR REPLACE MACRO tc_vskip(c) AS CASE WHEN left(c, 1) IN ('[', '{') AND tc_looks_parts(c)
  THEN tc_nontext(CAST(c AS JSON)) ELSE 0 END;
CREATE OR REPLACE MACRO tc_sys(m) AS coalesce(m.role, m."from") IN ('system', 'developer');
CREATE OR REPLACE MACRO tc_prompt(ms) AS nullif(array_to_string(list_transform(list_filter(
  list_sort(list_transform(ms, lambda m, i: {'k': CASE WHEN tc_sys(m) THEN 0 ELSE 1 END,
                                             'i': i, 't': tc_vtext(coalesce(m.content, m.value))})),
  lambda x: x.t IS NOT NULL AND x.t <> ''), lambda x: x.t), chr(10)), '');
CREATE OR REPLACE MACRO tc_skipped(ms) AS coalesce(list_sum(list_transform(ms,
  lambda m: tc_vskip(coalesce(m.content, m.value)))), 0);
CREATE OR REPLACE MACRO tc_str(x) AS CASE WHEN x IS NULL THEN NULL
  WHEN json_type(x) = 'VARCHAR' THEN nullif(x->>'$', '') ELSE CAST(x AS VARCHAR) END;
CREATE OR REPLACE MACRO tc_num(x) AS CASE WHEN x IS NULL THEN NULL
  WHEN json_type(x) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN CAST(x AS DOUBLE)
  WHEN json_type(x) = 'VARCHAR' THEN CASE WHEN x->>'$' = '' THEN NULL
       ELSE CAST(x->>'$' AS DOUBLE) END
  ELSE error('bad_number') END;
CREATE OR REPLACE MACRO tc_int(x) AS CASE WHEN x IS NULL THEN NULL
  WHEN json_type(x) IN ('BIGINT', 'UBIGINT') THEN CASE WHEN CAST(x AS HUGEINT) < 0
       THEN error('bad_number') ELSE CAST(x AS BIGINT) END
  WHEN tc_num(x) < 0 OR isnan(tc_num(x)) THEN error('bad_number')
  ELSE CAST(floor(tc_num(x)) AS BIGINT) END;
CREATE OR REPLACE MACRO tc_float(x) AS CASE WHEN isnan(tc_num(x)) OR isinf(tc_num(x))
  THEN error('bad_number') ELSE tc_num(x) END;
CREATE OR REPLACE MACRO tc_epoch(d) AS to_timestamp(CASE WHEN abs(d) > 1e11 THEN d / 1000
  ELSE d END);
CREATE OR REPLACE MACRO tc_time(x) AS CASE WHEN x IS NULL THEN NULL
  WHEN json_type(x) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN tc_epoch(CAST(x AS DOUBLE))
  WHEN json_type(x) = 'VARCHAR' THEN CASE WHEN trim(x->>'$') = '' THEN NULL
       WHEN regexp_full_match(trim(x->>'$'), '[0-9]+(\.[0-9]*)?')
       THEN tc_epoch(CAST(trim(x->>'$') AS DOUBLE))
       ELSE CAST(trim(x->>'$') AS TIMESTAMPTZ) END
  ELSE error('bad_timestamp') END;
CREATE OR REPLACE MACRO tc_rid(x) AS CASE WHEN x IS NULL OR json_type(x) IN ('ARRAY', 'OBJECT',
  'BOOLEAN') OR tc_str(x) IS NULL THEN error('missing_request_id') ELSE tc_str(x) END;
CREATE OR REPLACE MACRO tc_vrid(x) AS CASE WHEN x IS NULL OR x = '' THEN error('missing_request_id')
  ELSE x END;
CREATE OR REPLACE MACRO tc_vstr(x) AS nullif(x, '');
CREATE OR REPLACE MACRO tc_vtime(x) AS CASE WHEN x IS NULL OR trim(x) = '' THEN NULL
  WHEN regexp_full_match(trim(x), '[0-9]+(\.[0-9]*)?') THEN tc_epoch(CAST(trim(x) AS DOUBLE))
  ELSE CAST(trim(x) AS TIMESTAMPTZ) END;
CREATE OR REPLACE MACRO tc_dtime(x) AS tc_epoch(x);
CREATE OR REPLACE MACRO tc_dint(x) AS CASE WHEN x < 0 OR isnan(x) OR isinf(x)
  THEN error('bad_number') ELSE CAST(floor(x) AS BIGINT) END;
CREATE OR REPLACE MACRO tc_dfloat(x) AS CASE WHEN isnan(x) OR isinf(x) THEN error('bad_number')
  ELSE x END;
CREATE OR REPLACE MACRO tc_sint(x) AS CASE WHEN x IS NULL OR trim(x) = '' THEN NULL
  ELSE tc_dint(CAST(trim(x) AS DOUBLE)) END;
CREATE OR REPLACE MACRO tc_sfloat(x) AS CASE WHEN x IS NULL OR trim(x) = '' THEN NULL
  ELSE tc_dfloat(CAST(trim(x) AS DOUBLE)) END;
CREATE OR REPLACE MACRO tc_tools(x) AS CASE WHEN json_type(x) = 'ARRAY'
  THEN CAST(json_array_length(x) AS INTEGER) ELSE CAST(tc_int(x) AS INTEGER) END;
"""


def duckdb_connect(threads: int | None = None, memory_limit: str = "2GB"):
    """A DuckDB connection in UTC with the prompt/number/time macros defined."""
    import tempfile

    import duckdb

    con = duckdb.connect(config={"memory_limit": memory_limit})
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET temp_directory = '{tempfile.gettempdir()}/tokencensus-duckdb'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute(_MACROS)
    return con


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _sample(path: Path, n_bytes: int = 1 << 20) -> list[dict] | None:
    """The complete objects in the first MiB, or None if any of them is bad."""
    try:
        with open_binary(path) as f:
            head = f.read(n_bytes)
    except stream_errors():
        return None
    lines = head.split(b"\n")
    if len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    out = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(rec, dict):
            return None
        out.append(rec)
    return out


def _is_messages(v: Any) -> bool:
    """A list of message objects (other keys such as ``name`` or ``tool_calls`` are ignored)."""
    return isinstance(v, list) and all(isinstance(m, dict) for m in v)


def duckdb_plan(path: Path, mapping: dict[str, str]) -> dict | None:
    """Columns to read and a SELECT list for :func:`duckdb_jsonl`, or None (use Python)."""
    sample = _sample(path)
    if not sample:
        return None
    keys: set[str] = set()
    for rec in sample:
        keys.update(rec)
    columns: dict[str, str] = {}
    exprs: dict[str, str] = {}

    def family(top: str) -> str:
        """VARCHAR / DOUBLE when every sampled value of ``top`` is a string / a number."""
        vals = [rec[top] for rec in sample if rec.get(top) is not None]
        if vals and all(isinstance(v, str) for v in vals):
            return "VARCHAR"
        if vals and all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
            return "DOUBLE"
        return "JSON"

    def candidates(col: str) -> list[tuple[str, str]]:
        """(top-level key, nested rest) for each source of ``col`` the sample has."""
        out = []
        for s in sources(col, mapping):
            top, _, rest = s.partition(".")
            if col in mapping and s in keys:
                top, rest = s, ""
            if col not in mapping and top not in keys:
                continue  # an alias the sampled records do not use
            out.append((top, rest))
        return out

    typed_fn = {  # (canonical column, value family) -> macro
        ("request_id", "VARCHAR"): "tc_vrid",
        ("created_at", "VARCHAR"): "tc_vtime",
        ("created_at", "DOUBLE"): "tc_dtime",
        ("cost_usd", "DOUBLE"): "tc_dfloat",
    }
    json_fn = {
        "request_id": "tc_rid",
        "created_at": "tc_time",
        "cost_usd": "tc_float",
        "tool_calls": "tc_tools",
    }
    for col in REQUEST_SCHEMA.names:
        if col == "prompt_text":
            continue
        cands = candidates(col)
        if not cands:
            if col == "request_id":
                return None  # no id in the sample: the Python path rejects precisely
            continue
        fams = {family(top) if not rest else "JSON" for top, rest in cands}
        fam = fams.pop() if len(fams) == 1 else "JSON"
        if col == "tool_calls" or any(columns.get(t, fam) != fam for t, _ in cands):
            fam = "JSON"
        if fam != "JSON":
            fn = typed_fn.get((col, fam))
            if fn is None:
                if col in INT_COLS and fam == "DOUBLE":
                    fn = "tc_dint"
                elif col not in INT_COLS and col != "cost_usd" and fam == "VARCHAR":
                    fn = "tc_vstr"
                else:
                    fam = "JSON"
        if fam == "JSON":
            fn = json_fn.get(col, "tc_int" if col in INT_COLS else "tc_str")
        parts = []
        for top, rest in cands:
            columns[top] = fam if top not in columns or columns[top] == fam else "JSON"
            parts.append(_q(top) if not rest else f"json_extract({_q(top)}, {_lit('$.' + rest)})")
        x = parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"
        exprs[col] = f"{fn}({x})"
    # The prompt: a messages list is read as a typed struct list (fast), a string as text.
    prompt_parts, skipped_parts = [], []
    for s in sources("prompt_text", mapping):
        if "." in s and s not in keys:
            return None  # nested prompt source: the Python path handles it
        vals = [rec[s] for rec in sample if rec.get(s) is not None]
        if not vals:
            if s in keys:
                return None  # present but always null in the sample: type unknown
            continue
        if all(isinstance(v, str) for v in vals):
            columns[s] = "VARCHAR"
            prompt_parts.append(f"nullif({_q(s)}, '')")
        elif all(_is_messages(v) for v in vals):
            columns[s] = MESSAGE_STRUCT
            prompt_parts.append(f"tc_prompt({_q(s)})")
            skipped_parts.append(f"tc_skipped({_q(s)})")
        else:
            return None
    if prompt_parts:
        exprs["prompt_text"] = (
            prompt_parts[0] if len(prompt_parts) == 1 else f"coalesce({', '.join(prompt_parts)})"
        )
    exprs["_skipped"] = " + ".join(skipped_parts) if skipped_parts else "0"
    return {"columns": columns, "exprs": exprs}


def duckdb_jsonl(
    path: Path, plan: dict, ctx: ReadContext, batch_rows: int = 131072
) -> Iterator[pa.RecordBatch]:
    """Canonical batches of ``path`` by DuckDB; raises :class:`DuckFallback` on the first
    record it will not convert (rows already yielded stand)."""
    import duckdb

    con = duckdb_connect()
    cols = ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in plan["columns"].items())
    comp = compression(path) or "none"
    select = ", ".join(f"{e} AS {_q(c)}" for c, e in plan["exprs"].items())
    sql = (
        f"SELECT {select} FROM read_json({_lit(str(path))}, format='newline_delimited', "
        f"records=true, compression={_lit(comp)}, maximum_object_size=67108864, "
        f"columns={{{cols}}})"
    )
    try:
        reader = con.sql(sql).to_arrow_reader(batch_rows)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            ctx.report.multimodal_parts_skipped += int(
                pc.sum(batch.column("_skipped")).as_py() or 0
            )
            yield batch.drop_columns(["_skipped"])
    except (duckdb.Error, pa.ArrowInvalid, OSError) as exc:
        raise DuckFallback(str(exc)[:200]) from None
    finally:
        con.close()


# --- CSV -------------------------------------------------------------------------------------


class GenericCSV(Reader):
    """Any CSV with a header row; columns found by alias or ``--map``."""

    name = "csv"

    def sniff(self, path: Path, head: bytes) -> bool:
        first = head.split(b"\n", 1)[0]
        return (
            b"," in first
            and b"\x00" not in head
            and not head.startswith(b"PAR1")
            and not head.lstrip().startswith((b"{", b"["))
        )

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        from tokencensus.ingest.records import maybe_json

        mapping = ctx.mapping

        def convert(rec: dict) -> dict:
            row = pick({k: v for k, v in rec.items() if v != ""}, mapping)
            if isinstance(row.get("prompt_text"), str):
                v = maybe_json(row["prompt_text"])
                row["prompt_text"] = v if isinstance(v, list) else row["prompt_text"]
            return row

        yield from batches_from(iter_csv_records(path, ctx), path, ctx, convert)


# --- Parquet ---------------------------------------------------------------------------------


class GenericParquet(Reader):
    """Parquet with canonical or aliased columns; read column-wise, never row by row
    (a batch whose column will not cast is re-read row by row to reject precisely)."""

    name = "parquet"

    def sniff(self, path: Path, head: bytes) -> bool:
        return head[:4] == b"PAR1"

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        try:
            pf = pq.ParquetFile(path, pre_buffer=True)
        except (pa.ArrowInvalid, OSError) as exc:
            ctx.reject(str(path), None, "unreadable_file", type(exc).__name__)
            return
        names = set(pf.schema_arrow.names)
        select: dict[str, tuple[str, str]] = {}  # canonical -> (top column, nested rest)
        for col in REQUEST_SCHEMA.names:
            for src in sources(col, ctx.mapping):
                top, _, rest = src.partition(".")
                if src in names:
                    top, rest = src, ""
                if top in names:
                    select[col] = (top, rest)
                    break
        if "request_id" not in select:
            ctx.reject(str(path), None, "missing_request_id", "no request id column")
            return
        tops = sorted({t for t, _ in select.values()})
        md = pf.metadata
        groups = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        # uncompressed bytes of the columns read, per row group (a struct or list column has
        # several Parquet leaves; their paths start with the column's name)
        leaves = [
            j for j in range(md.num_columns) if md.schema.column(j).path.split(".")[0] in tops
        ]
        sizes = [
            sum(md.row_group(g).column(j).total_uncompressed_size for j in leaves)
            for g in range(md.num_row_groups)
        ]
        # batches of about BATCH_BYTES (wide prompt columns: fewer rows), at most BATCH_PARQUET
        row_bytes = max(1.0, sum(sizes) / max(1, sum(groups)))
        batch_rows = int(min(BATCH_PARQUET, max(1024, BATCH_BYTES / row_bytes)))
        workers = min(os.cpu_count() or 1, MAX_WORKERS)
        if (
            workers > 1
            and len(groups) > 1
            and max(groups) <= MAX_PARALLEL_GROUP
            and max(sizes) <= MAX_PARALLEL_BYTES
        ):
            # row groups decode and convert in a thread pool (pyarrow releases the GIL),
            # in file order, a bounded number ahead: several cores, flat memory
            local = threading.local()

            def convert(i: int) -> list[tuple[pa.RecordBatch, pa.RecordBatch | None]]:
                if not hasattr(local, "pf"):
                    local.pf = pq.ParquetFile(path)
                table = local.pf.read_row_group(i, columns=tops, use_threads=False)
                return [(b, self._try_columnar(b, select, ctx)) for b in table.to_batches()]

            parts = ordered_map(convert, range(len(groups)), workers, ahead=workers + 1)
            batches = (pair for part in parts for pair in part)
        else:
            batches = (
                (b, None) for b in prefetch(pf.iter_batches(batch_size=batch_rows, columns=tops))
            )
        offset = 0
        for batch, done in batches:
            if done is None:
                done = self._try_columnar(batch, select, ctx)
            if done is not None:
                yield done
            else:
                yield from self._rowwise(batch, select, ctx, path, offset)
            offset += batch.num_rows

    def _try_columnar(self, batch, select, ctx) -> pa.RecordBatch | None:
        """The column-wise conversion, or None where the batch needs the row-by-row path."""
        try:
            return self._columnar(batch, select, ctx)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, _RowWise):
            return None

    @staticmethod
    def _column(batch: pa.RecordBatch, top: str, rest: str) -> pa.Array:
        arr = batch.column(top)
        for key in rest.split(".") if rest else []:
            if not pa.types.is_struct(arr.type):
                raise _RowWise
            arr = pc.struct_field(arr, key)
        return arr

    def _columnar(self, batch, select, ctx) -> pa.RecordBatch:
        arrays, fields = [], []
        for col, (top, rest) in select.items():
            arr = self._column(batch, top, rest)
            target = REQUEST_SCHEMA.field(col).type
            if col == "created_at":
                arr = _time_array(arr)
            elif col == "prompt_text" and not pa.types.is_string(arr.type):
                if pa.types.is_large_string(arr.type):
                    arr = arr.cast(pa.string())
                else:
                    raise _RowWise
            elif col == "request_id":
                if arr.null_count:
                    raise _RowWise
                if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
                    if len(arr) and pc.min(pc.binary_length(arr)).as_py() == 0:
                        raise _RowWise
                elif not pa.types.is_integer(arr.type):
                    raise _RowWise
            elif col == "tool_calls" and pa.types.is_list(arr.type):
                arr = pc.list_value_length(arr)
            elif pa.types.is_integer(target) and not pa.types.is_integer(arr.type):
                raise _RowWise  # strings / floats: the row path applies the number rules
            elif pa.types.is_integer(target) and len(arr) and (pc.min(arr).as_py() or 0) < 0:
                raise _RowWise
            elif pa.types.is_string(target) and not (
                pa.types.is_string(arr.type)
                or pa.types.is_large_string(arr.type)
                or pa.types.is_dictionary(arr.type)
            ):
                raise _RowWise
            if not (pa.types.is_dictionary(arr.type) and arr.type.value_type == target):
                arr = arr.cast(target)  # dictionary strings are decoded by canonical_batch
            arrays.append(arr)
            fields.append(col)
        return pa.RecordBatch.from_arrays(arrays, names=fields)

    def _rowwise(self, batch, select, ctx, path, offset) -> Iterator[pa.RecordBatch]:
        mapping = {col: f"{top}.{rest}" if rest else top for col, (top, rest) in select.items()}

        def convert(rec: dict) -> dict:
            return {col: get_path(rec, src) for col, src in mapping.items()}

        records = ((offset + i + 1, rec) for i, rec in enumerate(batch.to_pylist()))
        yield from batches_from(records, path, ctx, convert)


BATCH_PARQUET = 1 << 20
BATCH_BYTES = 64 << 20
#: Row groups up to this many rows and bytes are read in parallel, whole (at most workers + 1
#: in memory); larger ones stream in batches of about BATCH_BYTES.
MAX_PARALLEL_GROUP = 4 << 20
MAX_PARALLEL_BYTES = 96 << 20
MAX_WORKERS = 4


def ordered_map(fn, items, workers: int, ahead: int | None = None):
    """``map(fn, items)`` on a thread pool, results in order, at most ``ahead`` in flight
    (so memory stays bounded however many items there are); pending work is cancelled when
    the consumer stops early."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    ahead = ahead or 2 * workers
    it = iter(items)
    pending: deque = deque()
    ex = ThreadPoolExecutor(workers, thread_name_prefix="tokencensus-read")
    try:
        for item in it:
            pending.append(ex.submit(fn, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        ex.shutdown(wait=True, cancel_futures=True)


def prefetch(it, depth: int = 2):
    """Iterate ``it`` in a background thread, ``depth`` items ahead: Parquet decoding (which
    releases the GIL) overlaps the conversion of the previous batch."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in it:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer
            put(exc)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class _RowWise(Exception):  # noqa: N818
    pass


def _time_array(arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_timestamp(t):
        return arr.cast(pa.timestamp("us", tz=t.tz or "UTC")).cast(pa.timestamp("us", tz="UTC"))
    if pa.types.is_date(t):
        return arr.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        if len(arr) == arr.null_count:
            return pa.nulls(len(arr), pa.timestamp("us", tz="UTC"))
        hi = pc.max(pc.abs(arr)).as_py()
        scale = 1000 if hi > 1e11 else 1_000_000
        us = pc.multiply(arr.cast(pa.float64()), scale).cast(pa.int64())
        return us.cast(pa.timestamp("us", tz="UTC"))
    if pa.types.is_null(t):
        return arr.cast(pa.timestamp("us", tz="UTC"))
    raise _RowWise


__all__ = [
    "ALIASES",
    "GenericCSV",
    "GenericJSONL",
    "GenericParquet",
    "RecordError",
    "canonical_row",
    "duckdb_connect",
    "messages_to_prompt",
    "parse_time",
    "read_json_lines",
    "to_float",
    "to_int",
]
