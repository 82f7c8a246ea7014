"""OpenAI: chat-completions request/response logs and Batch API input/output pairs.

``openai-chat`` reads JSON lines (or a JSON array) where each record is one call:

- ``{"request": {...}, "response": {...}}`` (also ``req``/``res`` or ``body``/``response``):
  the request body (``model``, ``messages`` or Responses-API ``input`` + ``instructions``,
  ``user``) and the response object (``chat.completion`` or Responses-API ``response``);
- a bare ``chat.completion`` object (no prompt), optionally with the ``messages`` sent
  beside it at the top level.

request id = the record's ``request_id``/``id`` if given at the top level, else the
response ``id``; time = response ``created`` (or ``created_at``); model = response
``model`` (the dated one) else the request's; tokens from ``usage`` (``prompt_tokens`` /
``completion_tokens`` / ``completion_tokens_details.reasoning_tokens`` /
``prompt_tokens_details.cached_tokens``, or the Responses-API ``input_tokens`` /
``output_tokens`` / ``*_details``); finish reason and tool calls of ``choices[0]``.

``openai-batch`` reads Batch API files. Output lines (``custom_id`` + ``response``) are
joined to input lines (``custom_id`` + ``method`` + ``url`` + ``body``) on ``custom_id``
across all the input and output files given in one ingest. Each file is validated and
reduced line by line into a temporary Parquet file (streaming, memory flat), then DuckDB
joins the two (its hash join spills to disk beyond its memory limit). One row per output
line: request id = ``custom_id``; tokens, model, time from the output ``response.body``;
the prompt from the input ``body.messages``. An output without a matching input keeps a
null prompt; an input without an output is counted in ``report.skipped``
(``batch_input_without_output``). When only input files are given, one row per input line
(model and prompt; no tokens). Failed requests (``error`` set or ``status_code`` >= 400)
are rows with finish reason ``error``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tokencensus.ingest import ReadContext, Reader, guarded, read_head
from tokencensus.ingest.messages import messages_to_prompt
from tokencensus.ingest.records import (
    RecordError,
    batches_from,
    first,
    get_path,
    iter_json_records,
    normalize,
)
from tokencensus.schema import REQUEST_SCHEMA


def _usage(usage: Any) -> dict:
    if not isinstance(usage, dict):
        return {}
    return {
        "prompt_tokens": first(usage.get("prompt_tokens"), usage.get("input_tokens")),
        "completion_tokens": first(usage.get("completion_tokens"), usage.get("output_tokens")),
        "reasoning_tokens": first(
            get_path(usage, "completion_tokens_details.reasoning_tokens"),
            get_path(usage, "output_tokens_details.reasoning_tokens"),
        ),
        "cached_tokens": first(
            get_path(usage, "prompt_tokens_details.cached_tokens"),
            get_path(usage, "input_tokens_details.cached_tokens"),
        ),
    }


def request_prompt(body: Any) -> tuple[str | None, int]:
    """Prompt text of a request body: ``messages``, or Responses-API ``input`` +
    ``instructions`` (system), or legacy completions ``prompt``."""
    if not isinstance(body, dict):
        return None, 0
    system = body.get("instructions") if isinstance(body.get("instructions"), str) else None
    msgs = body.get("messages")
    if msgs is None:
        msgs = body.get("input")
    if msgs is None and isinstance(body.get("prompt"), str):
        msgs = body["prompt"]
    if msgs is None and not system:
        return None, 0
    try:
        return messages_to_prompt(msgs, system)
    except ValueError:
        raise RecordError("bad_messages") from None


def response_fields(resp: Any) -> dict:
    """Canonical raw fields from a chat.completion (or Responses-API) response object."""
    if not isinstance(resp, dict):
        return {}
    choices = resp.get("choices")
    c0 = (
        choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    )
    msg = c0.get("message") if isinstance(c0.get("message"), dict) else {}
    tool_calls = msg.get("tool_calls")
    if not isinstance(tool_calls, list) and isinstance(resp.get("output"), list):
        tool_calls = [
            o for o in resp["output"] if isinstance(o, dict) and o.get("type") == "function_call"
        ]
    return {
        "response_id": resp.get("id"),
        "created_at": first(resp.get("created"), resp.get("created_at")),
        "model": resp.get("model"),
        "finish_reason": first(c0.get("finish_reason"), resp.get("status")),
        "tool_calls": tool_calls if isinstance(tool_calls, list) else None,
        **_usage(resp.get("usage")),
    }


def chat_row(rec: dict) -> dict:
    """One request/response log record in canonical raw form."""
    req = first(rec.get("request"), rec.get("req"), rec.get("body"))
    resp = first(rec.get("response"), rec.get("res"))
    if isinstance(resp, dict) and isinstance(resp.get("body"), dict):
        resp = resp["body"]
    if req is None and resp is None and rec.get("object") in ("chat.completion", "response"):
        resp, req = rec, {"messages": rec["messages"]} if "messages" in rec else None
    if req is not None and not isinstance(req, dict):
        raise RecordError("wrong_type")
    if resp is not None and not isinstance(resp, dict):
        raise RecordError("wrong_type")
    fields = response_fields(resp)
    prompt, skipped = request_prompt(req)
    req = req or {}
    return {
        "request_id": first(
            rec.get("request_id"), rec.get("custom_id"), fields.pop("response_id", None)
        ),
        "created_at": first(
            fields.pop("created_at", None), rec.get("created_at"), rec.get("timestamp")
        ),
        "model": first(fields.pop("model", None), req.get("model")),
        "provider": rec.get("provider") or "openai",
        "user_key": req.get("user"),
        "prompt_text": prompt,
        "_skipped": skipped,
        **fields,
    }


class OpenAIChat(Reader):
    """Chat-completions request/response JSON lines."""

    name = "openai-chat"

    def sniff(self, path: Path, head: bytes) -> bool:
        h = head.lstrip()
        if h[:1] not in (b"{", b"[") or b'"custom_id"' in h:
            return False
        return b'"chat.completion"' in h or (
            b'"request"' in h and b'"response"' in h and b'"usage"' in h
        )

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        yield from batches_from(iter_json_records(path, ctx), path, ctx, chat_row)


# --- Batch API ---------------------------------------------------------------------------

INPUT_SCHEMA = pa.schema(
    [
        pa.field("custom_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("user_key", pa.string()),
        pa.field("prompt_text", pa.string()),
    ]
)
OUTPUT_SCHEMA = pa.schema([pa.field("custom_id", pa.string()), *REQUEST_SCHEMA])


def is_batch_input(head: bytes) -> bool:
    return b'"custom_id"' in head and b'"method"' in head and b'"url"' in head


def is_batch_output(head: bytes) -> bool:
    return b'"custom_id"' in head and b'"response"' in head and not is_batch_input(head)


def batch_role(path: Path) -> str:
    """'input' or 'output', from the first line that parses (output lines have ``response``
    or ``error``; input lines have ``body`` / ``method`` / ``url``), else from the file name."""
    import orjson

    try:
        head = read_head(path, 1 << 20)
    except Exception:
        return "output"
    for line in head.split(b"\n")[:200]:
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            if "response" in rec or "error" in rec:
                return "output"
            if "body" in rec or "method" in rec or "url" in rec:
                return "input"
    name = path.name.lower()
    if "output" in name or "result" in name:
        return "output"
    if "input" in name or "request" in name:
        return "input"
    return "input" if is_batch_input(head) else "output"


def batch_input_row(rec: dict) -> dict:
    """An input line reduced to what the join needs (custom_id, model, user, prompt)."""
    body = rec.get("body")
    if not isinstance(body, dict):
        raise RecordError("wrong_type")
    prompt, skipped = request_prompt(body)
    return {
        "request_id": rec.get("custom_id"),
        "model": body.get("model"),
        "user_key": body.get("user"),
        "provider": "openai",
        "prompt_text": prompt,
        "_skipped": skipped,
    }


def batch_output_row(rec: dict) -> dict:
    """An output line in canonical raw form (no prompt: that comes from the input)."""
    resp = rec.get("response")
    if resp is not None and not isinstance(resp, dict):
        raise RecordError("wrong_type")
    resp = resp or {}
    body = resp.get("body")
    if body is not None and not isinstance(body, dict):
        raise RecordError("wrong_type")
    fields = response_fields(body)
    status = resp.get("status_code")
    failed = rec.get("error") not in (None, {}) or (
        isinstance(status, int) and not isinstance(status, bool) and status >= 400
    )
    fields.pop("response_id", None)
    return {
        "request_id": rec.get("custom_id"),
        "provider": "openai",
        **fields,
        "finish_reason": "error" if failed else fields.get("finish_reason"),
    }


class OpenAIBatch(Reader):
    """OpenAI Batch API input and output JSONL files, joined on ``custom_id``."""

    name = "openai-batch"

    def sniff(self, path: Path, head: bytes) -> bool:
        h = head.lstrip()
        return h[:1] == b"{" and (is_batch_input(h) or is_batch_output(h))

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        yield from self.read_group([path], ctx)

    def read_group(self, paths: list[Path], ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        inputs, outputs = [], []
        for p in paths:
            (inputs if batch_role(p) == "input" else outputs).append(p)
        if not outputs:
            for p in inputs:
                yield from guarded(
                    p, ctx, batches_from(iter_json_records(p, ctx), p, ctx, batch_input_row)
                )
            return
        tmp = Path(tempfile.mkdtemp(prefix="tokencensus-batch-"))
        try:
            in_files = self._stage(inputs, tmp / "in", ctx, batch_input_row, INPUT_SCHEMA)
            out_files = self._stage(outputs, tmp / "out", ctx, batch_output_row, OUTPUT_SCHEMA)
            yield from self._join(in_files, out_files, tmp, ctx)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _stage(self, paths, prefix: Path, ctx, convert, schema) -> list[str]:
        """Validate each file line by line into a temporary Parquet file of clean rows."""
        files = []
        for i, p in enumerate(paths):
            target = f"{prefix}-{i}.parquet"
            with pq.ParquetWriter(target, schema) as w:
                for batch in guarded(
                    p, ctx, batches_from(iter_json_records(p, ctx), p, ctx, convert)
                ):
                    w.write_batch(self._project(batch, schema))
            files.append(target)
        return files

    @staticmethod
    def _project(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        cols = []
        for f in schema:
            if f.name == "custom_id":
                cols.append(batch.column("request_id"))
            else:
                cols.append(batch.column(f.name))
        return pa.RecordBatch.from_arrays(cols, schema=schema)

    def _join(self, in_files, out_files, tmp: Path, ctx) -> Iterator[pa.RecordBatch]:
        from tokencensus.ingest.generic import _lit, duckdb_connect

        con = duckdb_connect(memory_limit="512MB")
        con.execute(f"SET temp_directory = {_lit(str(tmp / 'spill'))}")
        ins = "[" + ", ".join(_lit(f) for f in in_files) + "]"
        outs = "[" + ", ".join(_lit(f) for f in out_files) + "]"
        con.execute(
            f"CREATE VIEW i AS SELECT * FROM read_parquet({ins}) "
            f"QUALIFY row_number() OVER (PARTITION BY custom_id) = 1"
            if in_files
            else "CREATE VIEW i AS SELECT NULL::VARCHAR custom_id, NULL::VARCHAR model, "
            "NULL::VARCHAR user_key, NULL::VARCHAR prompt_text WHERE false"
        )
        con.execute(f"CREATE VIEW o AS SELECT * FROM read_parquet({outs})")
        if in_files:
            (unmatched,) = con.execute(
                "SELECT count(*) FROM i ANTI JOIN o USING (custom_id)"
            ).fetchall()[0]
            if unmatched:
                ctx.skip("batch_input_without_output", unmatched)
        cols = []
        for f in REQUEST_SCHEMA:
            if f.name in ("model", "user_key"):
                cols.append(f"coalesce(o.{f.name}, i.{f.name}) AS {f.name}")
            elif f.name == "prompt_text":
                cols.append("i.prompt_text AS prompt_text")
            else:
                cols.append(f"o.{f.name} AS {f.name}")
        sql = f"SELECT {', '.join(cols)} FROM o LEFT JOIN i USING (custom_id)"
        try:
            yield from con.sql(sql).to_arrow_reader(65536)
        finally:
            con.close()


__all__ = ["OpenAIBatch", "OpenAIChat", "chat_row", "normalize"]
