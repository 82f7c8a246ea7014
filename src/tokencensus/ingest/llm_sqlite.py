"""Simon Willison's ``llm`` CLI log database (``logs.db``, SQLite), read in place.

The file is opened read-only through a ``file:...?mode=ro`` URI (never written, no
journal created). Both schemas are read:

- ``llm`` >= 0.32 (threads/turns/messages/parts): one row per ``turns`` row. The prompt
  is the turn's input chain - every message from the root of the thread down to
  ``turns.parent_message_hash`` - with system messages first, then the others oldest
  first, each message's ``text`` parts in position order (text that borrows fragments is
  rebuilt from its ``text_ref`` pieces); attachment parts are skipped and counted.
- the legacy ``responses`` table (all versions; still present after 0.32): one row per
  response not also present as a turn; prompt = ``system`` then ``prompt``.

model = ``resolved_model`` else ``model``; tokens from ``input_tokens`` /
``output_tokens``; reasoning and cached tokens from the provider-specific
``token_details`` JSON (any ``reasoning_tokens`` / ``thoughtsTokenCount`` key, any
``cached_tokens`` / ``cache_read_input_tokens`` key); app = ``llm``; user and cost are null;
request id = the ULID ``id``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pyarrow as pa

from tokencensus.ingest import ReadContext, Reader
from tokencensus.ingest.records import batches_from

SQLITE_MAGIC = b"SQLite format 3\x00"


def _find(obj: Any, keys: tuple[str, ...]) -> Any:
    """The first number under any of ``keys`` anywhere in a nested JSON value."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in keys and isinstance(v, int | float) and not isinstance(v, bool):
                return v
        for v in obj.values():
            found = _find(v, keys)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for v in obj:
            found = _find(v, keys)
            if found is not None:
                return found
    return None


def token_details(raw: Any) -> tuple[Any, Any]:
    """(reasoning tokens, cached tokens) from a ``token_details`` JSON text."""
    if not raw:
        return None, None
    try:
        d = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    except orjson.JSONDecodeError:
        return None, None
    return (
        _find(d, ("reasoning_tokens", "thoughtsTokenCount", "reasoning")),
        _find(d, ("cached_tokens", "cache_read_input_tokens", "cachedContentTokenCount")),
    )


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection that never writes or creates anything next to the file."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    con = sqlite3.connect(uri, uri=True)
    con.row_factory = sqlite3.Row
    return con


class LLMLogsDB(Reader):
    """``llm``'s logs.db."""

    name = "llm-sqlite"

    def sniff(self, path: Path, head: bytes) -> bool:
        if not head.startswith(SQLITE_MAGIC):
            return False
        try:
            con = connect_ro(path)
            try:
                names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
            finally:
                con.close()
        except sqlite3.Error:
            return False
        return "responses" in names or "turns" in names

    def read(self, path: Path, ctx: ReadContext) -> Iterator[pa.RecordBatch]:
        if path.name.lower().endswith((".gz", ".zst", ".zstd")):
            ctx.reject(str(path), None, "unreadable_file", "decompress a SQLite file first")
            return
        try:
            con = connect_ro(path)
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        except sqlite3.Error as exc:
            ctx.reject(str(path), None, "unreadable_file", f"sqlite: {str(exc)[:100]}")
            return
        try:
            if "turns" in names:
                yield from batches_from(self._turns(con), path, ctx, _turn_row)
            if "responses" in names:
                yield from batches_from(
                    self._responses(con, "turns" in names), path, ctx, _response_row
                )
        except sqlite3.DatabaseError as exc:
            ctx.reject(str(path), None, "unreadable_file", f"sqlite: {str(exc)[:100]}")
        finally:
            con.close()

    def _turns(self, con: sqlite3.Connection) -> Iterator[tuple[int, dict]]:
        cols = {r[1] for r in con.execute("PRAGMA table_info(turns)")}
        has_frag = bool(
            con.execute("SELECT 1 FROM sqlite_master WHERE name = 'fragments'").fetchone()
        )
        want = [
            c
            for c in (
                "id",
                "model",
                "resolved_model",
                "input_tokens",
                "output_tokens",
                "token_details",
                "datetime_utc",
                "parent_message_hash",
            )
            if c in cols
        ]
        cur = con.execute(f"SELECT rowid AS _rowid, {', '.join(want)} FROM turns ORDER BY rowid")
        chain_con = con  # same connection: sqlite allows nested cursors
        for row in cur:
            rec = dict(row)
            rec["_prompt"], rec["_skipped"] = _chain_prompt(
                chain_con, rec.get("parent_message_hash"), has_frag
            )
            yield rec["_rowid"], rec

    def _responses(self, con: sqlite3.Connection, has_turns: bool) -> Iterator[tuple[int, dict]]:
        cols = {r[1] for r in con.execute("PRAGMA table_info(responses)")}
        want = [
            c
            for c in (
                "id",
                "model",
                "resolved_model",
                "prompt",
                "system",
                "input_tokens",
                "output_tokens",
                "token_details",
                "datetime_utc",
            )
            if c in cols
        ]
        where = " WHERE id NOT IN (SELECT id FROM turns)" if has_turns else ""
        cur = con.execute(
            f"SELECT rowid AS _rowid, {', '.join(want)} FROM responses{where} ORDER BY rowid"
        )
        for row in cur:
            yield row["_rowid"], dict(row)


CHAIN_SQL = """
WITH RECURSIVE chain(hash, depth) AS (
  SELECT ?, 0
  UNION ALL
  SELECT m.parent_hash, c.depth + 1 FROM chain c JOIN messages m ON m.hash = c.hash
  WHERE m.parent_hash IS NOT NULL AND c.depth < 100000
)
SELECT c.depth, m.role, p.type, p.text, p.payload
FROM chain c JOIN messages m ON m.hash = c.hash
JOIN parts p ON p.message_hash = m.hash
ORDER BY c.depth DESC, p.position
"""


def _chain_prompt(con: sqlite3.Connection, tip: str | None, has_frag: bool):
    """The prompt text of a turn's input chain, and the number of non-text parts skipped."""
    if not tip:
        return None, 0
    systems: list[str] = []
    rest: list[str] = []
    skipped = 0
    current: tuple[int, list[str]] | None = None
    msgs: list[tuple[str | None, list[str]]] = []
    for depth, role, typ, text, payload in con.execute(CHAIN_SQL, [tip]):
        if current is None or current[0] != depth:
            current = (depth, [])
            msgs.append((role, current[1]))
        if typ == "text":
            if text is None and payload:
                text = _ref_text(con, payload, has_frag)
            if text:
                current[1].append(text)
        elif typ in ("attachment",):
            skipped += 1
        # reasoning / tool_call / tool_result parts are not prompt text
    for role, texts in msgs:
        if texts:
            (systems if role in ("system", "developer") else rest).append("\n".join(texts))
    parts = systems + rest
    return ("\n".join(parts) if parts else None), skipped


def _ref_text(con: sqlite3.Connection, payload: str, has_frag: bool) -> str | None:
    try:
        p = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    pieces = p.get("text_ref") if isinstance(p, dict) else None
    if not isinstance(pieces, list):
        return p.get("text") if isinstance(p, dict) and isinstance(p.get("text"), str) else None
    out = []
    for piece in pieces:
        if not isinstance(piece, dict):
            continue
        if isinstance(piece.get("literal"), str):
            out.append(piece["literal"])
        elif "fragment" in piece and has_frag:
            r = con.execute("SELECT content FROM fragments WHERE id = ?", [piece["fragment"]])
            row = r.fetchone()
            if row and row[0]:
                out.append(row[0])
    return "".join(out)


def _row(rec: dict, prompt_text: str | None) -> dict:
    """The canonical fields both llm schemas share (same column names in each)."""
    reasoning, cached = token_details(rec.get("token_details"))
    return {
        "request_id": rec.get("id"),
        "created_at": rec.get("datetime_utc"),
        "model": rec.get("resolved_model") or rec.get("model"),
        "prompt_tokens": rec.get("input_tokens"),
        "completion_tokens": rec.get("output_tokens"),
        "reasoning_tokens": reasoning,
        "cached_tokens": cached,
        "app": "llm",
        "prompt_text": prompt_text,
    }


def _turn_row(rec: dict) -> dict:
    return {**_row(rec, rec.get("_prompt")), "_skipped": rec.get("_skipped") or 0}


def _response_row(rec: dict) -> dict:
    texts = [t for t in (rec.get("system"), rec.get("prompt")) if isinstance(t, str) and t]
    return _row(rec, "\n".join(texts) if texts else None)
