"""Langfuse exports: observations (and traces), as a JSON array, JSON lines, an API
response ``{"data": [...]}`` or CSV (JSON-valued columns as JSON text).

One row per observation of ``type == "GENERATION"``; other observation types
(SPAN, EVENT, ...) are counted in ``report.skipped`` and not emitted.

- request id: observation ``id``; time: ``startTime``; model: ``model``.
- tokens: ``usageDetails`` (``input``, ``output``; reasoning = keys naming
  ``reasoning``; cached = keys naming ``cache_read`` / ``cached``), else legacy
  ``usage.input`` / ``usage.output`` or ``promptTokens`` / ``completionTokens``.
- cost: ``costDetails.total`` (else the sum of its values), else
  ``calculatedTotalCost``, else ``usage.totalCost``.
- user: the observation's own ``userId`` if the export carries one, else the trace's
  ``userId``: trace records (objects with ``userId``/``timestamp`` and no ``type``) in the
  same ingest are read first and joined by ``traceId``; a trace that embeds its
  ``observations`` (``TraceWithFullDetails``) gives its userId to them directly.
- prompt: ``input`` - a messages list, ``{"messages": [...]}`` (plus ``system``), or a
  string; any other shape gives no prompt text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from tokencensus.ingest import ReadContext, Reader, guarded, read_head
from tokencensus.ingest.messages import messages_to_prompt
from tokencensus.ingest.records import (
    RecordError,
    Skip,
    batches_from,
    first,
    iter_csv_records,
    iter_json_records,
    looks_csv,
    maybe_json,
)

#: Trace -> user map entries kept in memory (ids are short; beyond this, userId is left null).
MAX_TRACES = 5_000_000


def _usage_key(d: dict, *needles: str) -> Any:
    for k, v in d.items():
        kl = k.lower()
        if any(n in kl for n in needles) and isinstance(v, int | float) and not isinstance(v, bool):
            return v
    return None


def _prompt(inp: Any) -> tuple[Any, str | None]:
    inp = maybe_json(inp)
    if isinstance(inp, str | list):
        return inp, None
    if isinstance(inp, dict):
        msgs = inp.get("messages")
        system = inp.get("system")
        if isinstance(msgs, list | str):
            return msgs, system if isinstance(system, str) else None
        for k in ("prompt", "input", "query", "question"):
            if isinstance(inp.get(k), str):
                return inp[k], None
    return None, None


def is_trace(rec: dict) -> bool:
    """A trace record rather than an observation."""
    return "type" not in rec and "traceId" not in rec and ("userId" in rec or "observations" in rec)


def observation_row(rec: dict, users: dict[str, str] | None = None, user: str | None = None):
    """One GENERATION observation in canonical raw form."""
    typ = rec.get("type")
    if typ is not None and str(typ).upper() != "GENERATION":
        raise Skip(f"langfuse_{str(typ).lower()[:20]}")
    usage_details = maybe_json(rec.get("usageDetails"))
    usage_details = usage_details if isinstance(usage_details, dict) else {}
    usage = maybe_json(rec.get("usage"))
    usage = usage if isinstance(usage, dict) else {}
    cost_details = maybe_json(rec.get("costDetails"))
    cost_details = cost_details if isinstance(cost_details, dict) else {}
    cost = cost_details.get("total")
    if cost is None and cost_details:
        vals = [v for v in cost_details.values() if isinstance(v, int | float)]
        cost = sum(vals) if vals else None
    msgs, system = _prompt(rec.get("input"))
    prompt, skipped = None, 0
    if msgs is not None or system:
        try:
            prompt, skipped = messages_to_prompt(msgs, system)
        except ValueError:
            raise RecordError("bad_messages") from None
    trace = rec.get("trace") if isinstance(rec.get("trace"), dict) else {}
    trace_id = rec.get("traceId")
    if user is None and users and isinstance(trace_id, str):
        user = users.get(trace_id)
    meta = maybe_json(rec.get("metadata"))
    meta = meta if isinstance(meta, dict) else {}
    return {
        "request_id": rec.get("id"),
        "created_at": first(rec.get("startTime"), rec.get("start_time"), rec.get("timestamp")),
        "model": rec.get("model"),
        "provider": first(meta.get("provider"), meta.get("ls_provider")),
        "prompt_tokens": first(
            usage_details.get("input"),
            usage_details.get("prompt_tokens"),
            usage.get("input"),
            rec.get("promptTokens"),
        ),
        "completion_tokens": first(
            usage_details.get("output"),
            usage_details.get("completion_tokens"),
            usage.get("output"),
            rec.get("completionTokens"),
        ),
        "reasoning_tokens": _usage_key(usage_details, "reasoning"),
        "cached_tokens": _usage_key(usage_details, "cache_read", "cached"),
        "cost_usd": first(cost, rec.get("calculatedTotalCost"), usage.get("totalCost")),
        "user_key": first(rec.get("userId"), trace.get("userId"), user),
        "app": first(rec.get("environment"), rec.get("promptName")),
        "finish_reason": rec.get("statusMessage") if rec.get("level") == "ERROR" else None,
        "prompt_text": prompt,
        "_skipped": skipped,
    }


class LangfuseExport(Reader):
    """Langfuse observations / traces exports."""

    name = "langfuse"

    def sniff(self, path: Path, head: bytes) -> bool:
        h = head.lstrip()
        if h[:1] in (b"{", b"["):
            observations = b'"traceId"' in h and (b'"GENERATION"' in h or b'"usageDetails"' in h)
            traces = (
                b'"userId"' in h
                and b'"timestamp"' in h
                and b'"type"' not in h
                and any(k in h for k in (b'"sessionId"', b'"htmlPath"', b'"observations"'))
            )
            return observations or traces
        header = head.split(b"\n", 1)[0].decode("utf-8", "replace")
        cols = {c.strip().strip('"').lstrip("\ufeff") for c in header.split(",")}
        return {"id", "traceId", "type", "startTime"} <= cols

    def _records(self, path: Path, ctx: ReadContext):
        if not looks_csv(path, {"id"}):
            return iter_json_records(path, ctx)
        return iter_csv_records(path, ctx, required={"id"})

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        yield from self.read_group([path], ctx)

    def read_group(self, paths: list[Path], ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        users: dict[str, str] = {}
        # Pass 1: the trace -> userId map, from files whose first record is a trace.
        trace_files = set()
        for path in paths:
            head = read_head(path, 1 << 16)
            if b'"type"' not in head and b'"userId"' in head:
                trace_files.add(path)
                for _, rec in self._records(path, ctx.__class__(report=_scratch())):
                    if is_trace(rec) and isinstance(rec.get("id"), str) and rec.get("userId"):
                        if len(users) < MAX_TRACES:
                            users[rec["id"]] = str(rec["userId"])
        for path in paths:
            yield from guarded(path, ctx, self._read_file(path, ctx, users))

    def _read_file(self, path, ctx, users) -> Iterator[pa.RecordBatch]:
        def convert(item: tuple[dict, str | None]) -> dict:
            rec, user = item
            return observation_row(rec, users, user)

        def flattened():
            for line, rec in self._records(path, ctx):
                if is_trace(rec):
                    obs = rec.get("observations")
                    user = rec.get("userId") if isinstance(rec.get("userId"), str) else None
                    embedded = (
                        [o for o in obs if isinstance(o, dict)] if isinstance(obs, list) else []
                    )
                    if not embedded:
                        ctx.skip("langfuse_trace")
                    for o in embedded:
                        yield line, (o, user)
                else:
                    yield line, (rec, None)

        yield from batches_from(flattened(), path, ctx, convert)


def _scratch():
    from tokencensus.ingest import IngestReport

    return IngestReport()
