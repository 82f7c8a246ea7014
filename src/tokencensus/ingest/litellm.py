"""LiteLLM proxy spend logs: the ``"LiteLLM_SpendLogs"`` table, live or exported.

``litellm-pg`` reads the table from PostgreSQL through a server-side cursor
(``tokencensus ingest postgresql://user@host/db``), so rows stream in batches
and the table is never loaded whole. ``?table=...`` in the DSN names another
table or view with the same columns; ``?since=2026-01-01`` keeps rows whose
``startTime`` is at or after that time. ``litellm`` reads an export of the same
table as CSV (JSON columns as JSON text), JSON lines or a JSON array.

Column use: ``request_id``; ``startTime``; ``model`` (else ``model_group``);
``custom_llm_provider``; ``prompt_tokens``; ``completion_tokens``; reasoning and
cached tokens from ``metadata.usage_object`` (``completion_tokens_details.
reasoning_tokens``, ``prompt_tokens_details.cached_tokens`` or
``cache_read_input_tokens``); ``spend``; user = ``end_user``, else ``user``;
app = ``metadata.user_api_key_team_alias``, else ``team_id``; the finish reason and
tool calls from the stored ``response``; the prompt from ``messages`` (stored
only with ``store_prompts_in_spend_logs``; ``{}`` means none).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import pyarrow as pa

from tokencensus.ingest import IngestError, ReadContext, Reader, display_name
from tokencensus.ingest.records import (
    RecordError,
    batches_from,
    first,
    get_path,
    iter_csv_records,
    iter_json_records,
    looks_csv,
    maybe_json,
)

TABLE = "LiteLLM_SpendLogs"
SIGNATURE = ("call_type", "spend", "startTime")
PG_BATCH = 5000


def litellm_row(rec: dict) -> dict:
    """One ``LiteLLM_SpendLogs`` row (from the table or an export) in canonical raw form."""
    meta = maybe_json(rec.get("metadata"))
    meta = meta if isinstance(meta, dict) else {}
    usage = meta.get("usage_object")
    usage = maybe_json(usage) if usage is not None else None
    usage = usage if isinstance(usage, dict) else {}
    response = maybe_json(rec.get("response"))
    choice0 = get_path(response, "choices.0") if isinstance(response, dict) else None
    choice0 = choice0 if isinstance(choice0, dict) else {}
    message = choice0.get("message") if isinstance(choice0.get("message"), dict) else {}
    tool_calls = message.get("tool_calls")
    messages = maybe_json(rec.get("messages"))
    if isinstance(messages, dict):
        # {} when prompts are not stored; some versions store the request kwargs
        messages = messages.get("messages") if messages else None
    if isinstance(messages, str) and not messages.strip():
        messages = None
    if messages is not None and not isinstance(messages, str | list):
        raise RecordError("bad_messages")
    return {
        "request_id": rec.get("request_id"),
        "created_at": first(rec.get("startTime"), rec.get("start_time"), rec.get("endTime")),
        "model": first(rec.get("model"), rec.get("model_group")),
        "provider": rec.get("custom_llm_provider"),
        "prompt_tokens": rec.get("prompt_tokens"),
        "completion_tokens": rec.get("completion_tokens"),
        "reasoning_tokens": first(
            get_path(usage, "completion_tokens_details.reasoning_tokens"),
            get_path(usage, "output_tokens_details.reasoning_tokens"),
        ),
        "cached_tokens": first(
            get_path(usage, "prompt_tokens_details.cached_tokens"),
            usage.get("cache_read_input_tokens"),
        ),
        "cost_usd": rec.get("spend"),
        "user_key": first(rec.get("end_user"), rec.get("user")),
        "app": first(meta.get("user_api_key_team_alias"), rec.get("team_id")),
        "finish_reason": choice0.get("finish_reason"),
        "tool_calls": tool_calls if isinstance(tool_calls, list) else None,
        "prompt_text": messages,
    }


class LiteLLMExport(Reader):
    """A CSV / JSON lines / JSON array export of ``LiteLLM_SpendLogs``."""

    name = "litellm"

    def sniff(self, path: Path, head: bytes) -> bool:
        h = head.lstrip()
        if h[:1] in (b"{", b"["):
            return all(f'"{k}"'.encode() in h for k in SIGNATURE) and b'"request_id"' in h
        header = head.split(b"\n", 1)[0].decode("utf-8", "replace")
        cols = {c.strip().strip('"').lstrip("\ufeff") for c in header.split(",")}
        return {"request_id", *SIGNATURE} <= cols

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        if not looks_csv(path, {"request_id"}):
            records = iter_json_records(path, ctx)
        else:
            records = iter_csv_records(path, ctx, required={"request_id"})
        yield from batches_from(records, path, ctx, litellm_row)


def _first_byte(path: Path) -> bytes:
    from tokencensus.ingest import read_head

    return read_head(path, 4096).lstrip()[:1]


class LiteLLMPostgres(Reader):
    """``"LiteLLM_SpendLogs"`` read live from PostgreSQL (a ``postgresql://`` DSN)."""

    name = "litellm-pg"
    takes_dsn = True

    def read(self, path: Any, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        yield from self.read_group([path], ctx)

    def read_group(self, paths: list, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        for dsn in paths:
            yield from self._read_dsn(str(dsn), ctx)

    def _read_dsn(self, dsn: str, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        try:
            import psycopg
            from psycopg import sql
            from psycopg.rows import dict_row
        except ImportError:  # pragma: no cover
            raise IngestError("litellm-pg needs psycopg: pip install 'psycopg[binary]'") from None
        conninfo, table, since = split_dsn(dsn)
        shown = display_name(dsn)
        try:
            conn = psycopg.connect(conninfo, connect_timeout=10)
        except psycopg.Error as exc:
            raise IngestError(f"{shown}: cannot connect: {_first_line(exc)}") from None
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
                    [table],
                )
                have = {r[0] for r in cur.fetchall()}
            if "request_id" not in have:
                raise IngestError(f"{shown}: no table {table!r} with a request_id column")
            wanted = [
                c
                for c in (
                    "request_id",
                    "startTime",
                    "endTime",
                    "model",
                    "model_group",
                    "custom_llm_provider",
                    "prompt_tokens",
                    "completion_tokens",
                    "spend",
                    "end_user",
                    "user",
                    "team_id",
                    "metadata",
                    "response",
                    "messages",
                )
                if c in have
            ]
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.Identifier(c) for c in wanted), sql.Identifier(table)
            )
            params: list = []
            if since and "startTime" in have:
                query += sql.SQL(" WHERE {} >= %s").format(sql.Identifier("startTime"))
                params.append(since)
            if "startTime" in have:
                query += sql.SQL(" ORDER BY {}").format(sql.Identifier("startTime"))
            # A named cursor is a server-side cursor: rows come PG_BATCH at a time.
            with (
                conn.transaction(),
                conn.cursor(name="tokencensus_spendlogs", row_factory=dict_row) as cur,
            ):
                cur.itersize = PG_BATCH
                cur.execute(query, params)
                counter = iter(range(1, 1 << 62))
                records = ((next(counter), row) for row in cur)
                yield from batches_from(records, f"{shown}#{table}", ctx, litellm_row)
        except psycopg.Error as exc:
            raise IngestError(f"{shown}: {_first_line(exc)}") from None
        finally:
            conn.close()


def split_dsn(dsn: str) -> tuple[str, str, str | None]:
    """The libpq DSN without our own ``table`` / ``since`` query parameters, and those."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    table = next((v for k, v in query if k == "table"), TABLE)
    since = next((v for k, v in query if k == "since"), None)
    rest = "&".join(f"{k}={v}" for k, v in query if k not in ("table", "since"))
    return urlunsplit(parts._replace(query=rest)), table, since


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
