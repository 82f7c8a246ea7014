"""OpenRouter: the activity-page CSV export and the generation API JSON.

The CSV's columns change between export versions, so it is parsed by header
name (only ``generation_id`` and ``created_at`` are required; the rest are
used when present). It carries no prompt text; ``run`` can join prompts from a
second log (:func:`tokencensus.ingest.join.join_prompts`).

The generation JSON is one ``GET /api/v1/generation`` object (``{"data": ...}``
or bare) per line, a JSON array of them (parsed incrementally), or one API
response ``{"data": [...]}``; an ``input.messages`` field (as
``GET /api/v1/generation/content`` returns) supplies the prompt.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from tokencensus.ingest import ReadContext, Reader
from tokencensus.ingest.records import (
    RecordError,
    batches_from,
    first,
    iter_csv_records,
    iter_json_records,
)

ACTIVITY_REQUIRED = {"generation_id", "created_at"}
ACTIVITY_HINTS = {"tokens_prompt", "tokens_completion", "cost_total", "model_permaslug"}


class ActivityCSV(Reader):
    """OpenRouter activity export (one row per generation, no prompts)."""

    name = "openrouter-csv"
    has_prompts = False

    def sniff(self, path: Path, head: bytes) -> bool:
        first_line = head.split(b"\n", 1)[0].decode("utf-8", "replace")
        cols = {c.strip().strip('"').lstrip("\ufeff") for c in first_line.split(",")}
        return ACTIVITY_REQUIRED <= cols and len(ACTIVITY_HINTS & cols) >= 2

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        from tokencensus.ingest import generic

        done = 0
        if path.stat().st_size >= generic.DUCKDB_MIN_BYTES:
            try:
                for batch in activity_duckdb(path):
                    done += batch.num_rows
                    yield batch
                return
            except generic.DuckFallback:
                pass  # the rest, record by record, rejecting precisely
        records = iter_csv_records(path, ctx, required=ACTIVITY_REQUIRED, skip_records=done)
        yield from batches_from(records, path, ctx, activity_row)


def activity_duckdb(path: Path) -> Iterator[pa.RecordBatch]:
    """The activity CSV through DuckDB ``read_csv`` (strict: any bad row raises
    :class:`~tokencensus.ingest.generic.DuckFallback`; rows already yielded stand)."""
    import csv
    import io

    import duckdb

    from tokencensus.ingest import compression, read_head
    from tokencensus.ingest.generic import DuckFallback, _lit, _q, duckdb_connect

    first_line = read_head(path, 1 << 16).split(b"\n", 1)[0].decode("utf-8", "replace")
    header = [h.strip().lstrip("\ufeff") for h in next(csv.reader(io.StringIO(first_line)))]
    if len(set(header)) != len(header) or not ACTIVITY_REQUIRED <= set(header):
        raise DuckFallback("header")
    have = set(header)

    def col(name: str) -> str:
        return f"nullif({_q(name)}, '')" if name in have else "NULL::VARCHAR"

    def coalesce(*names: str) -> str:
        return f"coalesce({', '.join(col(n) for n in names)})"

    model = coalesce("model_permaslug", "model")
    variant = col("variant")
    exprs = {
        "request_id": f"tc_vrid({col('generation_id')})",
        "created_at": f"tc_vtime({col('created_at')})",
        "model": f"CASE WHEN {variant} IS NOT NULL AND {variant} <> 'standard' "
        f"AND strpos({model}, ':') = 0 THEN {model} || ':' || {variant} ELSE {model} END",
        "provider": col("provider_name"),
        "prompt_tokens": f"tc_sint({col('tokens_prompt')})",
        "completion_tokens": f"tc_sint({col('tokens_completion')})",
        "reasoning_tokens": f"tc_sint({col('tokens_reasoning')})",
        "cached_tokens": f"tc_sint({col('tokens_cached')})",
        "cost_usd": f"tc_sfloat({coalesce('cost_total', 'usage')})",
        "user_key": coalesce("user", "api_key_name"),
        "app": col("app_name"),
        "finish_reason": coalesce("finish_reason_normalized", "finish_reason_raw"),
    }
    select = ", ".join(f"{e} AS {_q(c)}" for c, e in exprs.items())
    comp = compression(path) or "none"
    sql = (
        f"SELECT {select} FROM read_csv({_lit(str(path))}, header=true, all_varchar=true, "
        f"strict_mode=true, delim=',', quote='\"', escape='\"', compression={_lit(comp)}, "
        f"max_line_size=67108864)"
    )
    con = duckdb_connect()
    try:
        yield from con.sql(sql).to_arrow_reader(131072)
    except (duckdb.Error, pa.ArrowInvalid, OSError) as exc:
        raise DuckFallback(str(exc)[:200]) from None
    finally:
        con.close()


def activity_row(rec: dict) -> dict:
    """One activity-CSV row in canonical (raw) form."""
    rid = rec.get("generation_id")
    if not rid:
        raise RecordError("missing_request_id")
    model = first(rec.get("model_permaslug"), rec.get("model"))
    variant = rec.get("variant")
    if model and variant and variant not in ("standard", "") and ":" not in model:
        model = f"{model}:{variant}"
    return {
        "request_id": rid,
        "created_at": rec.get("created_at"),
        "model": model,
        "provider": rec.get("provider_name"),
        "prompt_tokens": rec.get("tokens_prompt"),
        "completion_tokens": rec.get("tokens_completion"),
        "reasoning_tokens": rec.get("tokens_reasoning"),
        "cached_tokens": rec.get("tokens_cached"),
        "cost_usd": first(rec.get("cost_total"), rec.get("usage")),
        "user_key": first(rec.get("user"), rec.get("api_key_name")),
        "app": rec.get("app_name"),
        "finish_reason": first(rec.get("finish_reason_normalized"), rec.get("finish_reason_raw")),
    }


def generation_row(rec: dict) -> dict:
    """One generation-API object (optionally with ``input.messages``) in canonical form."""
    data = rec.get("data", rec)
    if not isinstance(data, dict):
        raise RecordError("not_an_object")
    rid = data.get("id")
    if not rid:
        raise RecordError("missing_request_id")
    prompt = None
    inp = rec.get("input") if isinstance(rec.get("input"), dict) else data.get("input")
    if isinstance(inp, dict):
        from tokencensus.ingest.messages import messages_to_prompt

        system = inp.get("system")
        try:
            prompt, skipped = messages_to_prompt(
                inp.get("messages", inp.get("prompt")), system if isinstance(system, str) else None
            )
        except ValueError:
            raise RecordError("bad_messages") from None
    else:
        skipped = 0
    app = data.get("app_id")
    return {
        "request_id": rid,
        "created_at": data.get("created_at"),
        "model": data.get("model"),
        "provider": data.get("provider_name"),
        "prompt_tokens": first(data.get("tokens_prompt"), data.get("native_tokens_prompt")),
        "completion_tokens": first(
            data.get("tokens_completion"), data.get("native_tokens_completion")
        ),
        "reasoning_tokens": data.get("native_tokens_reasoning"),
        "cached_tokens": data.get("native_tokens_cached"),
        "cost_usd": data.get("total_cost"),
        "user_key": data.get("external_user"),
        "app": app if app is None or isinstance(app, str) else str(app),
        "finish_reason": first(data.get("finish_reason"), data.get("native_finish_reason")),
        "tool_calls": data.get("tool_calls"),
        "language": data.get("language"),
        "prompt_text": prompt,
        "_skipped": skipped,
    }


class GenerationJSON(Reader):
    """``GET /api/v1/generation`` objects, as JSON lines or one JSON array."""

    name = "openrouter-json"

    def sniff(self, path: Path, head: bytes) -> bool:
        h = head.lstrip()
        return (
            h[:1] in (b"{", b"[")
            and (b'"tokens_prompt"' in h or b'"native_tokens_prompt"' in h)
            and b'"gen-' in h
        )

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        yield from batches_from(iter_json_records(path, ctx), path, ctx, generation_row)
