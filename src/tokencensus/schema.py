"""The canonical request schema, defined once.

Every reader in :mod:`tokencensus.ingest` yields record batches of exactly
``REQUEST_SCHEMA``; every later stage reads it. ``prompt_text`` is transient:
the classifier reads it and the store drops it before anything is written.
"""

from __future__ import annotations

import pyarrow as pa

REQUEST_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("model", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("reasoning_tokens", pa.int64()),
        pa.field("cached_tokens", pa.int64()),
        pa.field("cost_usd", pa.float64()),
        pa.field("user_key", pa.string()),
        pa.field("app", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("language", pa.string()),
        pa.field("tool_calls", pa.int32()),
        pa.field("prompt_text", pa.string()),
    ]
)

#: Columns that may be persisted (everything but the prompt text).
METADATA_COLUMNS: list[str] = [f.name for f in REQUEST_SCHEMA if f.name != "prompt_text"]

#: The prompt text a classifier sees: the first 1,000 characters, as in the study.
CLASSIFY_CHARS = 1000

#: One row per (request, content-category path) kept above the threshold.
LABEL_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
    ]
)


def empty_batch(schema: pa.Schema = REQUEST_SCHEMA) -> pa.RecordBatch:
    """An empty batch of ``schema``, for readers that find nothing."""
    return pa.RecordBatch.from_pylist([], schema=schema)


def conform(table: pa.Table | pa.RecordBatch, schema: pa.Schema = REQUEST_SCHEMA) -> pa.Table:
    """Return ``table`` with exactly ``schema``'s columns, in order, cast to its types.

    Missing columns become nulls, so a reader only fills what its format has.
    """
    n = table.num_rows
    cols = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
            cols.append(col)
        else:
            cols.append(pa.nulls(n, type=field.type))
    return pa.Table.from_arrays(cols, schema=schema)
