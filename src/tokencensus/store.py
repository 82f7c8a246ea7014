"""The metadata-only store: one DuckDB file plus Parquet tables partitioned by week.

It holds request metadata, labels and bucket assignments; never prompt text
(the ``prompt_text`` column is dropped before any write). Writes are
idempotent (``INSERT OR IGNORE`` on the request id) and each batch commits in
one transaction, so a run killed at any point resumes and ends identical to a
run that never stopped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from tokencensus.ingest import REJECT_SCHEMA
from tokencensus.schema import METADATA_COLUMNS

DB_NAME = "tokencensus.duckdb"

DDL = """
CREATE TABLE IF NOT EXISTS requests (
    request_id VARCHAR PRIMARY KEY,
    created_at TIMESTAMPTZ,
    model VARCHAR,
    provider VARCHAR,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    reasoning_tokens BIGINT,
    cached_tokens BIGINT,
    cost_usd DOUBLE,
    user_key VARCHAR,
    app VARCHAR,
    finish_reason VARCHAR,
    language VARCHAR,
    tool_calls INTEGER,
    has_prompt BOOLEAN,
    sampled BOOLEAN,
    weight DOUBLE,
    source_file VARCHAR
);
CREATE TABLE IF NOT EXISTS labels (
    request_id VARCHAR,
    path VARCHAR,
    confidence REAL,
    rank INTEGER,
    PRIMARY KEY (request_id, path)
);
CREATE TABLE IF NOT EXISTS assignments (
    request_id VARCHAR PRIMARY KEY,
    primary_bucket VARCHAR,
    buckets VARCHAR[],
    subtag VARCHAR,
    top_path VARCHAR,
    confidence REAL,
    decided_by VARCHAR,
    error VARCHAR
);
CREATE TABLE IF NOT EXISTS rejects (
    file VARCHAR, line BIGINT, reason VARCHAR, detail VARCHAR
);
CREATE TABLE IF NOT EXISTS files (
    path VARCHAR PRIMARY KEY, size BIGINT, mtime DOUBLE, format VARCHAR,
    rows BIGINT, done_at TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
"""

PARQUET_TABLES = ("requests", "labels", "assignments", "rejects", "catalog")


class Store:
    """A DuckDB file in ``out_dir``; every write is a transaction."""

    def __init__(self, out_dir: Path, read_only: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / DB_NAME
        if read_only:
            if not self.path.exists():
                raise FileNotFoundError(
                    f"{self.path}: no tokencensus store here (run `tokencensus run` first)"
                )
            self.con = duckdb.connect(str(self.path), read_only=True)
        else:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.con = duckdb.connect(str(self.path))
            self.con.execute(DDL)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- run settings ---------------------------------------------------------
    def get_meta(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM meta").fetchall())

    def check_settings(self, settings: dict) -> None:
        """Record the run's sampling/classifier settings; refuse to mix incompatible runs."""
        current = self.get_meta()
        fixed = {k: str(v) for k, v in settings.items()}
        clash = {k: (current[k], v) for k, v in fixed.items() if k in current and current[k] != v}
        if clash:
            k, (old, new) = next(iter(clash.items()))
            raise ValueError(
                f"{self.out_dir}: this store was built with {k}={old}, not {new}; "
                "use a new --out folder (estimates from mixed settings would be wrong)"
            )
        self.con.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, v) for k, v in fixed.items()]
        )

    # -- files ----------------------------------------------------------------
    def file_done(self, path: Path) -> bool:
        """Whether ``path`` (same size and mtime) was fully ingested before."""
        st = path.stat()
        row = self.con.execute(
            "SELECT size, mtime FROM files WHERE path = ? AND done_at IS NOT NULL", [str(path)]
        ).fetchone()
        return row is not None and row[0] == st.st_size and abs(row[1] - st.st_mtime) < 1e-6

    def start_file(self, path: Path) -> None:
        """Forget a partial earlier attempt's rejects for ``path`` (rows stay: they are idempotent)."""
        self.con.execute("DELETE FROM rejects WHERE file = ?", [str(path)])

    def finish_file(self, path: Path, fmt: str, rows: int, rejects: pa.Table) -> None:
        st = path.stat()
        self.con.execute("BEGIN")
        if rejects.num_rows:
            self.con.register("_rej", rejects.cast(REJECT_SCHEMA))
            self.con.execute("INSERT INTO rejects SELECT * FROM _rej")
            self.con.unregister("_rej")
        self.con.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)",
            [str(path), st.st_size, st.st_mtime, fmt, rows, datetime.now(UTC)],
        )
        self.con.execute("COMMIT")

    # -- rows -----------------------------------------------------------------
    def classified_ids(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` already have an assignment (so a rerun skips them)."""
        if not ids:
            return set()
        self.con.register("_ids", pa.table({"request_id": ids}))
        done = self.con.execute(
            "SELECT a.request_id FROM assignments a JOIN _ids USING (request_id)"
        ).fetchall()
        self.con.unregister("_ids")
        return {r[0] for r in done}

    def write_batch(
        self,
        requests: pa.Table,
        source_file: str,
        predictions: pa.Table | None = None,
        assignments: pa.Table | None = None,
    ) -> None:
        """Write one batch's metadata, labels and assignments in a single transaction."""
        meta_cols = [c for c in METADATA_COLUMNS if c in requests.column_names]
        con = self.con
        con.register("_req", requests)
        con.execute("BEGIN")
        try:
            cols = ", ".join(meta_cols)
            con.execute(
                f"""
                INSERT OR IGNORE INTO requests
                    ({cols}, has_prompt, sampled, weight, source_file)
                SELECT {cols}, prompt_text IS NOT NULL AND prompt_text <> '', sampled, weight, ?
                FROM _req
                """,
                [source_file],
            )
            if predictions is not None and predictions.num_rows:
                con.register("_pred", predictions)
                con.execute(
                    """
                    INSERT OR IGNORE INTO labels
                    SELECT request_id, labels[i].path, labels[i].confidence, i FROM (
                        SELECT request_id, labels, generate_subscripts(labels, 1) AS i
                        FROM _pred)
                    """
                )
            if assignments is not None and assignments.num_rows:
                con.register("_asg", assignments)
                if predictions is not None:
                    con.execute(
                        """
                        INSERT OR IGNORE INTO assignments
                        SELECT a.request_id, a.primary_bucket, a.buckets, a.subtag, a.top_path,
                               a.confidence, a.decided_by, p.error
                        FROM _asg a LEFT JOIN _pred p USING (request_id)
                        """
                    )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        finally:
            for name in ("_req", "_pred", "_asg"):
                try:
                    con.unregister(name)
                except Exception:
                    pass

    def set_catalog(self, catalog: pa.Table) -> None:
        """Replace the model-metadata table (one row per logged model)."""
        self.con.register("_cat", catalog)
        self.con.execute("CREATE OR REPLACE TABLE catalog AS SELECT * FROM _cat")
        self.con.unregister("_cat")

    def export_parquet(self) -> dict[str, Path]:
        """Write the tables as Parquet; ``requests`` partitioned by ISO week."""
        out = self.out_dir / "parquet"
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        tables = {r[0] for r in self.con.execute("SHOW TABLES").fetchall()}
        for name in PARQUET_TABLES:
            if name not in tables:
                continue
            if name == "requests":
                target = out / "requests"
                self.con.execute(
                    f"""COPY (SELECT *, strftime(date_trunc('week', created_at AT TIME ZONE 'UTC'),
                                 '%Y-%m-%d') AS week FROM requests ORDER BY request_id)
                        TO '{target}' (FORMAT parquet, PARTITION_BY (week), OVERWRITE_OR_IGNORE,
                                       FILENAME_PATTERN 'part_{{i}}')"""
                )
            else:
                target = out / f"{name}.parquet"
                self.con.execute(
                    f"COPY (SELECT * FROM {name} ORDER BY ALL) TO '{target}' (FORMAT parquet)"
                )
            paths[name] = target
        return paths

    def summary(self) -> dict:
        """Row counts, for the CLI and tests."""
        q = self.con.execute
        return {
            "requests": q("SELECT count(*) FROM requests").fetchone()[0],
            "sampled": q("SELECT count(*) FROM requests WHERE sampled").fetchone()[0],
            "classified": q("SELECT count(*) FROM assignments").fetchone()[0],
            "rejects": q("SELECT count(*) FROM rejects").fetchone()[0],
            "settings": json.dumps(self.get_meta(), sort_keys=True),
        }
