"""The study's analyses, each one SQL definition over the store, returned as a DataFrame.

Tokens are prompt + completion (reasoning counted inside completion).
Totals come from every request's metadata; category shares come from the
classified sample, weighted by the sampling weights (a ratio estimator), with
a 95% interval from its linearised variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from tokencensus.store import DB_NAME

BASE_VIEWS = """
CREATE OR REPLACE TEMP VIEW req AS
SELECT r.*,
       coalesce(r.prompt_tokens, 0) + coalesce(r.completion_tokens, 0) AS tokens,
       date_trunc('week', r.created_at AT TIME ZONE 'UTC')::DATE AS week,
       c.author, c.author_name, c.origin_group, c.open_weights, c.model_id AS catalog_model,
       CASE WHEN c.open_weights IS NULL THEN 'unknown'
            WHEN NOT c.open_weights THEN 'closed'
            WHEN c.origin_group = 'china' THEN 'chinese_open'
            ELSE 'rest_of_world_open' END AS origin
FROM requests r LEFT JOIN catalog c ON c.key = r.model;
CREATE OR REPLACE TEMP VIEW cls AS
SELECT q.*, a.primary_bucket, a.buckets, a.subtag, a.top_path, a.confidence, a.decided_by
FROM req q JOIN assignments a USING (request_id)
WHERE q.sampled;
"""

# A weighted share with a linearised 95% interval: y = indicator, t = tokens, w = weight.
SHARE_SQL = """
WITH base AS ({inner}),
tot AS (SELECT {keys_tot} sum(w * t) AS wt, count(*) AS n FROM base {group_tot}),
grp AS (SELECT {keys} sum(w * t) AS wtb, count(*) AS nb FROM base GROUP BY ALL),
est AS (SELECT grp.*, tot.wt, tot.n, grp.wtb / nullif(tot.wt, 0) AS share FROM grp JOIN tot {join_on}),
var AS (
  SELECT {keys_e} sum(power(b.w * b.t, 2) * power(CASE WHEN {match} THEN 1 ELSE 0 END - e.share, 2))
           / nullif(power(any_value(e.wt), 2), 0) AS var
  FROM est e JOIN base b ON {join_b}
  GROUP BY ALL
)
SELECT est.*, sqrt(var.var) AS se,
       greatest(0, share - 1.96 * sqrt(var.var)) AS lo,
       least(1, share + 1.96 * sqrt(var.var)) AS hi
FROM est JOIN var USING ({using})
ORDER BY ALL
"""


def _share(con: duckdb.DuckDBPyConnection, inner: str, group: list[str], cat: str) -> pd.DataFrame:
    """Weighted token share of ``cat`` within each ``group`` (plus a 95% interval)."""
    keys = ", ".join(group + [cat]) + ","
    keys_tot = (", ".join(group) + ",") if group else ""
    group_tot = ("GROUP BY " + ", ".join(group)) if group else ""
    join_on = ("USING (" + ", ".join(group) + ")") if group else "ON true"
    keys_e = ", ".join(f"e.{k}" for k in group + [cat]) + ","
    join_b = " AND ".join([f"b.{g} IS NOT DISTINCT FROM e.{g}" for g in group] or ["true"])
    match = f"b.{cat} IS NOT DISTINCT FROM e.{cat}"
    using = ", ".join(group + [cat])
    sql = SHARE_SQL.format(
        inner=inner,
        keys=keys,
        keys_tot=keys_tot,
        group_tot=group_tot,
        join_on=join_on,
        keys_e=keys_e,
        join_b=join_b,
        match=match,
        using=using,
    )
    return con.execute(sql).df()


@dataclass
class Analysis:
    """One analysis: a name, what it shows, and the method that computes it."""

    name: str
    title: str
    description: str


class Census:
    """A store opened for analysis; every method returns a DataFrame (``tokencensus.open``)."""

    ANALYSES = {
        "bucket_share": "Token share by bucket, whole period",
        "weekly_bucket_share": "Weekly token share by bucket",
        "weekly_tokens": "Weekly tokens, all requests",
        "author_share": "Weekly token share by model author",
        "origin_share": "Weekly token share: closed / Chinese open / rest-of-world open",
        "reasoning_share": "Weekly share of completion tokens that are reasoning",
        "length_by_bucket": "Mean prompt and completion tokens per request, per bucket",
        "subtags": "Sub-tag mix inside each bucket",
        "unknown_models": "Models the catalogue does not know",
        "data_quality": "Rejected records per reason",
    }

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        path = self.out_dir / DB_NAME
        if not path.exists():
            raise FileNotFoundError(f"{path}: no tokencensus store here (run `tokencensus run`)")
        self.con = duckdb.connect(str(path), read_only=True)
        self.con.execute(BASE_VIEWS)

    def close(self) -> None:
        self.con.close()

    def sql(self, query: str) -> pd.DataFrame:
        """Any SQL over the views ``req`` (every request) and ``cls`` (classified sample)."""
        return self.con.execute(query).df()

    def summary(self) -> dict:
        row = self.con.execute(
            """SELECT count(*), sum(tokens), count(*) FILTER (WHERE sampled),
                      count(*) FILTER (WHERE has_prompt), min(created_at), max(created_at),
                      count(DISTINCT model)
               FROM req"""
        ).fetchone()
        classified = self.con.execute("SELECT count(*) FROM cls").fetchone()[0]
        return {
            "requests": row[0],
            "tokens": int(row[1] or 0),
            "sampled": row[2],
            "with_prompt": row[3],
            "first": row[4],
            "last": row[5],
            "models": row[6],
            "classified": classified,
        }

    # -- the analyses ---------------------------------------------------------
    def bucket_share(self) -> pd.DataFrame:
        inner = "SELECT primary_bucket, tokens AS t, weight AS w FROM cls"
        return _share(self.con, inner, [], "primary_bucket")

    def weekly_bucket_share(self, open_weights: bool | None = None) -> pd.DataFrame:
        cond = "" if open_weights is None else f"WHERE open_weights = {str(open_weights).lower()}"
        inner = f"SELECT week, primary_bucket, tokens AS t, weight AS w FROM cls {cond}"
        return _share(self.con, inner, ["week"], "primary_bucket")

    def weekly_tokens(self) -> pd.DataFrame:
        return self.sql(
            """SELECT week, count(*) AS requests, sum(tokens) AS tokens,
                      sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens
               FROM req GROUP BY week ORDER BY week"""
        )

    def author_share(self) -> pd.DataFrame:
        return self.sql(
            """SELECT week, coalesce(author, 'unknown') AS author, sum(tokens) AS tokens,
                      sum(tokens) / sum(sum(tokens)) OVER (PARTITION BY week) AS share
               FROM req GROUP BY 1, 2 ORDER BY week, tokens DESC"""
        )

    def origin_share(self) -> pd.DataFrame:
        return self.sql(
            """SELECT week, origin, sum(tokens) AS tokens,
                      sum(tokens) / sum(sum(tokens)) OVER (PARTITION BY week) AS share
               FROM req GROUP BY 1, 2 ORDER BY week, origin"""
        )

    def reasoning_share(self) -> pd.DataFrame:
        return self.sql(
            """SELECT week, sum(reasoning_tokens) AS reasoning_tokens,
                      sum(completion_tokens) AS completion_tokens,
                      sum(reasoning_tokens) / nullif(sum(completion_tokens), 0) AS share
               FROM req WHERE reasoning_tokens IS NOT NULL GROUP BY week ORDER BY week"""
        )

    def length_by_bucket(self) -> pd.DataFrame:
        return self.sql(
            """SELECT primary_bucket, count(*) AS n,
                      sum(weight * prompt_tokens) / sum(weight) AS mean_prompt_tokens,
                      sum(weight * completion_tokens) / sum(weight) AS mean_completion_tokens
               FROM cls GROUP BY ALL ORDER BY mean_prompt_tokens DESC"""
        )

    def subtags(self) -> pd.DataFrame:
        inner = "SELECT primary_bucket, coalesce(subtag, '(none)') AS subtag, tokens AS t, weight AS w FROM cls"
        return _share(self.con, inner, ["primary_bucket"], "subtag")

    def unknown_models(self) -> pd.DataFrame:
        return self.sql(
            """SELECT model, count(*) AS requests, sum(tokens) AS tokens FROM req
               WHERE catalog_model IS NULL AND model IS NOT NULL GROUP BY model ORDER BY tokens DESC"""
        )

    def data_quality(self) -> pd.DataFrame:
        return self.sql(
            "SELECT reason, count(*) AS records FROM rejects GROUP BY reason ORDER BY 2 DESC"
        )

    def export_tables(self, formats: tuple[str, ...] = ("csv", "parquet")) -> dict[str, Path]:
        """Write every analysis as CSV and Parquet under ``out/tables``."""
        folder = self.out_dir / "tables"
        folder.mkdir(parents=True, exist_ok=True)
        written = {}
        for name in self.ANALYSES:
            df = getattr(self, name)()
            if "csv" in formats:
                df.to_csv(folder / f"{name}.csv", index=False)
            if "parquet" in formats:
                df.to_parquet(folder / f"{name}.parquet", index=False)
            written[name] = folder / f"{name}.csv"
        return written


def open(out_dir: str | Path) -> Census:  # noqa: A001 - mirrors tokencensus.open
    """Open a run's output folder for analysis."""
    return Census(Path(out_dir))
