"""Public conversation dumps: ShareGPT, LMSYS-Chat-1M and WildChat.

Each is read from JSON lines, a (possibly multi-GB) JSON array parsed incrementally
with ijson (memory flat), or Parquet (the Hugging Face releases), read a batch at a time.

One request per conversation: its first user turn. The prompt is the system message(s),
if any, then the first user message (the text of the request that opened the
conversation); later turns are not emitted. A conversation with no user turn is rejected
(``no_user_turn``).

- ShareGPT: ``{"id", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}``;
  request id = ``id`` (a conversation without one is rejected as ``missing_request_id``);
  ``model`` if the dump has one.
- LMSYS-Chat-1M: ``conversation_id``, ``model``, ``conversation: [{"role", "content"}]``,
  ``language``.
- WildChat: ``conversation_hash`` (request id; ``conversation_id`` in some releases),
  ``model``, ``timestamp``, ``conversation: [{"role", "content", ...}]``, ``language``;
  user = ``hashed_ip``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tokencensus.ingest import ReadContext, Reader
from tokencensus.ingest.messages import messages_to_prompt
from tokencensus.ingest.records import RecordError, batches_from, first, iter_json_records

USER_ROLES = {"user", "human", "prompter"}
SYSTEM_ROLES = {"system", "developer"}


def first_request(turns: Any) -> tuple[str | None, int]:
    """System message(s) plus the first user message of a conversation."""
    if not isinstance(turns, list):
        raise RecordError("bad_messages")
    opening = []
    for t in turns:
        if not isinstance(t, dict):
            raise RecordError("bad_messages")
        role = t.get("role", t.get("from"))
        role = role.lower() if isinstance(role, str) else role
        if role in SYSTEM_ROLES:
            opening.append(t)
        elif role in USER_ROLES:
            opening.append(t)
            break
    else:
        raise RecordError("no_user_turn")
    try:
        return messages_to_prompt(opening)
    except ValueError:
        raise RecordError("bad_messages") from None


def sharegpt_row(rec: dict) -> dict:
    prompt, skipped = first_request(rec.get("conversations", rec.get("items")))
    return {
        "request_id": first(rec.get("id"), rec.get("conversation_id")),
        "model": rec.get("model"),
        "language": first(rec.get("lang"), rec.get("language")),
        "prompt_text": prompt,
        "_skipped": skipped,
    }


def lmsys_row(rec: dict) -> dict:
    prompt, skipped = first_request(rec.get("conversation"))
    return {
        "request_id": rec.get("conversation_id"),
        "model": rec.get("model"),
        "language": rec.get("language"),
        "created_at": rec.get("tstamp"),
        "prompt_text": prompt,
        "_skipped": skipped,
    }


def wildchat_row(rec: dict) -> dict:
    prompt, skipped = first_request(rec.get("conversation"))
    return {
        "request_id": first(rec.get("conversation_hash"), rec.get("conversation_id")),
        "model": rec.get("model"),
        "language": rec.get("language"),
        "created_at": rec.get("timestamp"),
        "user_key": rec.get("hashed_ip"),
        "provider": "openai",
        "prompt_text": prompt,
        "_skipped": skipped,
    }


def _parquet_names(path: Path) -> set[str]:
    return set(pq.read_schema(path).names)


class _ChatDump(Reader):
    convert = staticmethod(sharegpt_row)
    keys: tuple[bytes, ...] = ()
    columns: set[str] = set()
    #: Parquet columns to read (others, like moderation scores, are left on disk).
    parquet_columns: tuple[str, ...] = ()

    def sniff(self, path: Path, head: bytes) -> bool:
        if head[:4] == b"PAR1":
            return self.columns <= _parquet_names(path)
        h = head.lstrip()
        return h[:1] in (b"{", b"[") and all(k in h for k in self.keys)

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        from tokencensus.ingest import read_head

        if read_head(path, 4) == b"PAR1":
            yield from self._parquet(path, ctx)
        else:
            yield from batches_from(iter_json_records(path, ctx), path, ctx, self.convert)

    def _parquet(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            ctx.reject(str(path), None, "unreadable_file", type(exc).__name__)
            return
        cols = [c for c in self.parquet_columns if c in pf.schema_arrow.names]
        offset = 0
        for batch in pf.iter_batches(batch_size=8192, columns=cols):
            records = ((offset + i + 1, r) for i, r in enumerate(batch.to_pylist()))
            yield from batches_from(records, path, ctx, self.convert)
            offset += batch.num_rows


class ShareGPT(_ChatDump):
    """ShareGPT-style dumps (``conversations`` of ``from``/``value`` turns)."""

    name = "sharegpt"
    convert = staticmethod(sharegpt_row)
    keys = (b'"conversations"', b'"from"', b'"value"')
    columns = {"conversations"}
    parquet_columns = ("id", "conversation_id", "conversations", "items", "model", "lang")


class LMSYSChat(_ChatDump):
    """LMSYS-Chat-1M (``conversation_id``, ``conversation`` of role/content turns)."""

    name = "lmsys"
    convert = staticmethod(lmsys_row)
    keys = (b'"conversation_id"', b'"conversation"', b'"role"')
    columns = {"conversation_id", "conversation"}
    parquet_columns = ("conversation_id", "model", "conversation", "language", "tstamp")


class WildChat(_ChatDump):
    """WildChat (``conversation_hash``, ``conversation`` of role/content turns)."""

    name = "wildchat"
    convert = staticmethod(wildchat_row)
    keys = (b'"conversation_hash"', b'"conversation"')
    columns = {"conversation_hash", "conversation"}
    parquet_columns = (
        "conversation_hash",
        "conversation_id",
        "model",
        "timestamp",
        "conversation",
        "language",
        "hashed_ip",
    )
