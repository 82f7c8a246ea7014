"""Join prompt text from one log onto the metadata rows of another, by ``request_id``.

Typical use: an OpenRouter activity CSV (tokens, cost, no prompts) plus a log that
carries the prompts of the same generations (generation JSON with ``input.messages``,
a proxy log, a generic JSONL with ``--map``).

The prompt side is read with :func:`tokencensus.ingest.read` (any format, detection,
rejects counted in the same report) into a DuckDB table in a temporary database file;
the metadata batches are streamed through DuckDB as an Arrow stream and left-joined on
``request_id``. DuckDB's hash join spills to disk beyond its memory limit, so memory stays
bounded whatever the sizes. A metadata row that already has prompt text keeps it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from tokencensus.ingest import IngestReport, read
from tokencensus.schema import REQUEST_SCHEMA, conform


@dataclass
class JoinStats:
    """What the join did: metadata rows seen, rows that got a prompt, prompt rows read."""

    meta_rows: int = 0
    matched: int = 0
    prompt_rows: int = 0
    duplicate_prompt_ids: int = 0


def join_prompts(
    meta_batches: Iterable[pa.RecordBatch],
    prompt_source_paths: list[str | Path],
    *,
    format: str | None = None,
    mapping: dict[str, str] | None = None,
    strict: bool = False,
    report: IngestReport | None = None,
    stats: JoinStats | None = None,
    memory_limit: str = "1GB",
) -> Iterator[pa.RecordBatch]:
    """Yield ``meta_batches`` (canonical schema) with ``prompt_text`` filled from the prompt
    log(s) at ``prompt_source_paths``, matched on ``request_id``.

    ``format``/``mapping``/``strict`` are passed to :func:`read` for the prompt side and its
    rejects go into ``report`` (a fresh one if None). ``stats`` (a :class:`JoinStats`) is
    filled when the output has been consumed. Output row order is not guaranteed.
    When one request id has several prompt rows the first one read wins.
    """
    from tokencensus.ingest.generic import duckdb_connect

    stats = stats if stats is not None else JoinStats()
    report = report if report is not None else IngestReport()
    tmp = Path(tempfile.mkdtemp(prefix="tokencensus-join-"))
    con = duckdb_connect(memory_limit=memory_limit)
    try:
        con.execute(f"SET temp_directory = '{tmp / 'spill'}'")
        con.execute("CREATE TABLE p (request_id VARCHAR, prompt_text VARCHAR, seq BIGINT)")
        seq = 0
        for batch in read(prompt_source_paths, format, mapping, strict, report):
            part = pa.table(
                {
                    "request_id": batch.column("request_id"),
                    "prompt_text": batch.column("prompt_text"),
                    "seq": pa.array(range(seq, seq + batch.num_rows), pa.int64()),
                }
            )
            seq += batch.num_rows
            con.register("part", part)
            con.execute("INSERT INTO p SELECT * FROM part WHERE prompt_text IS NOT NULL")
            con.unregister("part")
        stats.prompt_rows = seq
        (dups,) = con.execute("SELECT count(*) - count(DISTINCT request_id) FROM p").fetchall()[0]
        stats.duplicate_prompt_ids = int(dups)
        con.execute(
            "CREATE TABLE pu AS SELECT request_id, arg_min(prompt_text, seq) AS prompt_text "
            "FROM p GROUP BY request_id"
        )
        con.execute("DROP TABLE p")

        def conformed() -> Iterator[pa.RecordBatch]:
            for b in meta_batches:
                if b.num_rows:
                    yield from conform(b).combine_chunks().to_batches()

        meta = pa.RecordBatchReader.from_batches(REQUEST_SCHEMA, conformed())
        con.register("meta", meta)
        cols = ", ".join(
            "coalesce(m.prompt_text, pu.prompt_text) AS prompt_text"
            if f.name == "prompt_text"
            else f"m.{f.name}"
            for f in REQUEST_SCHEMA
        )
        sql = (
            f"SELECT {cols}, pu.request_id IS NOT NULL AS _matched "
            "FROM meta m LEFT JOIN pu ON m.request_id = pu.request_id"
        )
        for batch in con.sql(sql).to_arrow_reader(65536):
            matched = batch.column("_matched")
            import pyarrow.compute as pc

            stats.meta_rows += batch.num_rows
            stats.matched += int(pc.sum(matched.cast(pa.int64())).as_py() or 0)
            out = batch.drop_columns(["_matched"])
            yield pa.RecordBatch.from_arrays(out.columns, schema=REQUEST_SCHEMA)
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)
