"""OpenRouter: the activity-page CSV export and the generation API JSON.

The CSV's columns change between export versions, so it is parsed by header
name. It carries no prompt text; ``run`` can join prompts from a second log.
The generation JSON is one ``GET /api/v1/generation`` object (``{"data": ...}``
or bare) per line, or a JSON array of them; an ``input.messages`` field (as
``GET /api/v1/generation/content`` returns) supplies the prompt.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa

from tokencensus.ingest import BATCH_ROWS, ReadContext, Reader, open_text, rows_to_batch
from tokencensus.ingest.generic import RecordError, parse_time, read_json_lines, to_float, to_int
from tokencensus.ingest.messages import messages_to_prompt

ACTIVITY_REQUIRED = {"generation_id", "created_at", "tokens_prompt", "tokens_completion"}


class ActivityCSV(Reader):
    """OpenRouter activity export (one row per generation, no prompts)."""

    name = "openrouter-csv"
    has_prompts = False

    def sniff(self, path: Path, head: bytes) -> bool:
        first = head.split(b"\n", 1)[0].decode("utf-8", "replace")
        cols = {c.strip() for c in first.split(",")}
        return ACTIVITY_REQUIRED <= cols

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        rows: list[dict] = []
        with open_text(path) as f:
            reader = csv.DictReader(f)
            missing = ACTIVITY_REQUIRED - set(reader.fieldnames or [])
            if missing:
                ctx.reject(str(path), 1, "missing_columns", ", ".join(sorted(missing)))
                return
            for rec in reader:
                line = reader.line_num
                try:
                    rows.append(activity_row(rec))
                except RecordError as exc:
                    ctx.reject(str(path), line, str(exc))
                    continue
                if len(rows) >= BATCH_ROWS:
                    yield rows_to_batch(rows)
                    rows = []
        if rows:
            yield rows_to_batch(rows)


def activity_row(rec: dict) -> dict:
    """One activity-CSV row in canonical form."""
    rid = rec.get("generation_id")
    if not rid:
        raise RecordError("missing_request_id")
    model = rec.get("model_permaslug") or rec.get("model") or None
    variant = rec.get("variant")
    if model and variant and variant not in ("standard", "") and ":" not in model:
        model = f"{model}:{variant}"
    return {
        "request_id": rid,
        "created_at": parse_time(rec.get("created_at")),
        "model": model,
        "provider": rec.get("provider_name") or None,
        "prompt_tokens": to_int(rec.get("tokens_prompt")),
        "completion_tokens": to_int(rec.get("tokens_completion")),
        "reasoning_tokens": to_int(rec.get("tokens_reasoning")),
        "cached_tokens": to_int(rec.get("tokens_cached")),
        "cost_usd": to_float(rec.get("cost_total")),
        "user_key": rec.get("user") or rec.get("api_key_name") or None,
        "app": rec.get("app_name") or None,
        "finish_reason": rec.get("finish_reason_normalized")
        or rec.get("finish_reason_raw")
        or None,
    }


def generation_row(rec: dict) -> tuple[dict, int]:
    """One generation-API object (optionally with ``input.messages``) in canonical form."""
    data = rec.get("data", rec)
    if not isinstance(data, dict):
        raise RecordError("not_an_object")
    rid = data.get("id")
    if not rid:
        raise RecordError("missing_request_id")
    prompt, skipped = None, 0
    inp = rec.get("input") or data.get("input")
    if isinstance(inp, dict):
        try:
            prompt, skipped = messages_to_prompt(inp.get("messages"), inp.get("system"))
        except ValueError:
            raise RecordError("bad_messages") from None
    tool_calls = data.get("tool_calls")
    return {
        "request_id": str(rid),
        "created_at": parse_time(data.get("created_at")),
        "model": data.get("model"),
        "provider": data.get("provider_name"),
        "prompt_tokens": to_int(data.get("tokens_prompt", data.get("native_tokens_prompt"))),
        "completion_tokens": to_int(
            data.get("tokens_completion", data.get("native_tokens_completion"))
        ),
        "reasoning_tokens": to_int(data.get("native_tokens_reasoning")),
        "cached_tokens": to_int(data.get("native_tokens_cached")),
        "cost_usd": to_float(data.get("total_cost")),
        "user_key": data.get("external_user"),
        "app": str(data["app_id"]) if data.get("app_id") is not None else None,
        "finish_reason": data.get("finish_reason"),
        "tool_calls": to_int(tool_calls) if not isinstance(tool_calls, list) else len(tool_calls),
        "language": data.get("language"),
        "prompt_text": prompt,
    }, skipped


class GenerationJSON(Reader):
    """``GET /api/v1/generation`` objects, as JSON lines or one JSON array."""

    name = "openrouter-json"

    def sniff(self, path: Path, head: bytes) -> bool:
        h = head.lstrip()
        return h[:1] in (b"{", b"[") and b'"tokens_prompt"' in h and b'"gen-' in h

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        with open_text(path) as f:
            first = f.read(1)
            while first and first.isspace():
                first = f.read(1)
        if first == "[":
            yield from self._read_array(path, ctx)
        else:
            yield from read_json_lines(path, ctx, generation_row)

    def _read_array(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        with open_text(path) as f:
            try:
                items = orjson.loads(f.read())
            except orjson.JSONDecodeError as exc:
                ctx.reject(str(path), None, "malformed_json", str(exc)[:100])
                return
        rows = []
        for i, rec in enumerate(items, 1):
            try:
                row, skipped = generation_row(rec if isinstance(rec, dict) else {"data": rec})
            except RecordError as exc:
                ctx.reject(str(path), i, str(exc))
                continue
            ctx.report.multimodal_parts_skipped += skipped
            rows.append(row)
        if rows:
            yield rows_to_batch(rows)
