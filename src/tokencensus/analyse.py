"""The study's analyses, each one SQL definition over the store, returned as a DataFrame.

Tokens are prompt + completion (reasoning counted inside completion).
Totals come from every request's metadata; category shares come from the
classified sample, weighted by the sampling weights (a ratio estimator), with
a 95% interval from its linearised variance (or a bootstrap, on request).

Small groups: every analysis whose rows are groups of requests (a bucket, an
author, a model, a language, a week, a cohort...) carries ``requests`` and
``users`` per cell and a ``suppressed`` flag. A cell with fewer than
``min_group`` requests, or (where user keys exist) fewer than ``min_group``
distinct users, has its figures blanked; where the cells of a group add up to
100%, further cells are blanked until the blanked ones together reach the
threshold, so a blanked cell cannot be recovered by subtraction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from tokencensus import estimate
from tokencensus.settings import DATA_DIR, get_settings
from tokencensus.store import DB_NAME

BASE_VIEWS = """
CREATE OR REPLACE TEMP VIEW req AS
SELECT r.*,
       coalesce(r.prompt_tokens, 0) + coalesce(r.completion_tokens, 0) AS tokens,
       date_trunc('week', r.created_at AT TIME ZONE 'UTC')::DATE AS week,
       c.author, c.author_name, c.origin_group, c.open_weights, c.model_id AS catalog_model,
       c.prompt_price, c.completion_price,
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

# A store built before the catalogue existed still opens.
EMPTY_CATALOG = """
CREATE TEMP TABLE catalog (key VARCHAR, model_id VARCHAR, author VARCHAR, author_name VARCHAR,
    origin_group VARCHAR, open_weights BOOLEAN, prompt_price DOUBLE, completion_price DOUBLE,
    created BIGINT);
"""

# A weighted token share with a linearised 95% interval. ``inner`` yields one row per
# request: the group and category columns, t = tokens, w = weight (1/inclusion
# probability), u = user key. Ratio R = sum(w t y) / sum(w t); its Poisson-sampling
# variance is sum((1 - 1/w) w^2 t^2 (y - R)^2) / (sum w t)^2 (zero for a census, w = 1).
SHARE_SQL = """
WITH base AS ({inner}),
tot AS (SELECT {keys_tot} sum(w * t) AS wt, count(*) AS n FROM base {group_tot}),
grp AS (SELECT {keys} sum(w * t) AS tokens, count(*) AS requests, count(DISTINCT u) AS users
        FROM base GROUP BY ALL),
est AS (SELECT grp.*, tot.n AS group_requests, grp.tokens / nullif(tot.wt, 0) AS share
        FROM grp JOIN tot {join_on}),
var AS (
  SELECT {keys_e} sum((1 - 1 / greatest(b.w, 1)) * power(b.w * b.t, 2)
                      * power(CASE WHEN {match} THEN 1 ELSE 0 END - e.share, 2))
           / nullif(power(any_value(t2.wt), 2), 0) AS var
  FROM est e JOIN base b ON {join_b} JOIN tot t2 {join_t2}
  GROUP BY ALL
)
SELECT est.*, sqrt(var.var) AS se,
       greatest(0, share - 1.959964 * sqrt(var.var)) AS lo,
       least(1, share + 1.959964 * sqrt(var.var)) AS hi
FROM est JOIN var USING ({using})
ORDER BY ALL
"""


def _share_sql(inner: str, group: list[str], cat: str) -> str:
    keys = ", ".join(group + [cat]) + ","
    keys_tot = (", ".join(group) + ",") if group else ""
    group_tot = ("GROUP BY " + ", ".join(group)) if group else ""
    join_on = ("USING (" + ", ".join(group) + ")") if group else "ON true"
    keys_e = ", ".join(f"e.{k}" for k in group + [cat]) + ","
    join_b = " AND ".join([f"b.{g} IS NOT DISTINCT FROM e.{g}" for g in group] or ["true"])
    join_t2 = (
        "ON " + " AND ".join(f"t2.{g} IS NOT DISTINCT FROM e.{g}" for g in group)
        if group
        else "ON true"
    )
    match = f"b.{cat} IS NOT DISTINCT FROM e.{cat}"
    return SHARE_SQL.format(
        inner=inner,
        keys=keys,
        keys_tot=keys_tot,
        group_tot=group_tot,
        join_on=join_on,
        keys_e=keys_e,
        join_b=join_b,
        join_t2=join_t2,
        match=match,
        using=", ".join(group + [cat]),
    )


def _share(con: duckdb.DuckDBPyConnection, inner: str, group: list[str], cat: str) -> pd.DataFrame:
    """Weighted token share of ``cat`` within each ``group`` (plus a 95% interval)."""
    return con.execute(_share_sql(inner, group, cat)).df()


def suppress(
    df: pd.DataFrame,
    k: int,
    values: list[str],
    group: list[str] | None = None,
    use_users: bool = True,
    n_col: str = "requests",
    users_col: str = "users",
) -> pd.DataFrame:
    """Blank ``values`` in cells with < ``k`` requests or < ``k`` users; flag them ``suppressed``.

    With ``group`` (cells whose shares add up to one within it), blank the smallest
    further cells until each group's blanked cells number at least two and together
    hold at least ``k`` requests, so no blanked figure can be recovered by subtraction.
    """
    df = df.copy()
    if not len(df):
        df["suppressed"] = pd.Series(dtype=bool)
        return df
    n = df[n_col].fillna(0).to_numpy(float)
    sup = n < k
    if use_users and users_col in df:
        sup |= df[users_col].fillna(0).to_numpy(float) < k
    if group is not None:
        if group:
            codes = df.groupby(group, dropna=False, sort=False).ngroup().to_numpy()
        else:
            codes = np.zeros(len(df), dtype=int)
        for g in np.unique(codes[sup]):
            idx = np.flatnonzero(codes == g)
            if sup[idx].all():
                continue
            free = idx[~sup[idx]]
            order = free[np.argsort(n[free], kind="stable")]
            for j in order:
                if sup[idx].sum() >= 2 and n[idx][sup[idx]].sum() >= k:
                    break
                sup[j] = True
    df["suppressed"] = sup
    cols = [c for c in values if c in df]
    for c in cols:
        df[c] = df[c].astype(float)
    df.loc[df["suppressed"], cols] = np.nan
    return df


@dataclass
class Analysis:
    """One analysis: its method name and what it shows."""

    name: str
    title: str
    suppressed: bool = True


ANALYSES: list[Analysis] = [
    Analysis("weekly_tokens", "Weekly requests and tokens, all requests"),
    Analysis("bucket_share", "Token share by bucket, whole period (classified sample)"),
    Analysis("bucket_share_bootstrap", "Token share by bucket with a bootstrap interval (sample)"),
    Analysis(
        "weekly_bucket_share",
        "Weekly token share by bucket: all traffic, open weights, and per origin (sample)",
    ),
    Analysis("author_share", "Weekly token share by model author, all requests"),
    Analysis("origin_share", "Weekly token share: closed / Chinese open / rest-of-world open"),
    Analysis(
        "open_closed",
        "Open vs closed and origin shares: all traffic, within Programming and Roleplay",
    ),
    Analysis("subtags", "Sub-tag mix inside each bucket (sample)"),
    Analysis("author_mix", "Bucket mix per model author (sample)"),
    Analysis("reasoning_share", "Weekly reasoning-token share, from the first week it exists"),
    Analysis("length", "Mean prompt and completion tokens per request, per week and bucket"),
    Analysis("length_by_bucket", "Mean prompt and completion tokens per request, per bucket"),
    Analysis("tool_calls", "Weekly share of requests with tool calls, and their token share"),
    Analysis("price_usage", "Price vs usage per model, overall and per bucket"),
    Analysis("price_elasticity", "Slope of log usage on log price, overall and per bucket"),
    Analysis("cohort_retention", "Users still active k weeks after their first week with a model"),
    Analysis("language_mix", "Weekly token share by language"),
    Analysis("adjusted_bucket_share", "Bucket shares, raw and adjusted for classifier error"),
    Analysis("unknown_models", "Models the catalogue does not know", suppressed=False),
    Analysis("data_quality", "Rejected records per reason", suppressed=False),
]

OTHER = "other"


class Census:
    """A store opened for analysis; every method returns a DataFrame (``tokencensus.open``)."""

    ANALYSES = {a.name: a.title for a in ANALYSES}

    def __init__(self, out_dir: Path, min_group: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        path = self.out_dir / DB_NAME
        if not path.exists():
            raise FileNotFoundError(f"{path}: no tokencensus store here (run `tokencensus run`)")
        self.con = duckdb.connect(str(path), read_only=True)
        tables = {r[0] for r in self.con.execute("SHOW TABLES").fetchall()}
        if "catalog" not in tables:
            self.con.execute(EMPTY_CATALOG)
        self.con.execute(BASE_VIEWS)
        self.min_group = int(get_settings().min_group if min_group is None else min_group)
        self.confusion: dict | pd.DataFrame | None = None
        self.confusion_source: str | None = None
        self._has_users: bool | None = None

    def close(self) -> None:
        self.con.close()

    def sql(self, query: str) -> pd.DataFrame:
        """Any SQL over the views ``req`` (every request) and ``cls`` (classified sample)."""
        return self.con.execute(query).df()

    def meta(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM meta").fetchall())

    def has_users(self) -> bool:
        """Whether the logs carry user keys (then suppression also counts users)."""
        if self._has_users is None:
            q = "SELECT count(user_key) > 0 FROM requests"
            self._has_users = bool(self.con.execute(q).fetchone()[0])
        return self._has_users

    def field_start(self, column: str) -> dict:
        """When a field starts to exist: first week with a value, and weeks with/without it."""
        row = self.con.execute(
            f"""SELECT min(week) FILTER (WHERE {column} IS NOT NULL), min(week), max(week),
                       count({column}), count(*)
                FROM req"""
        ).fetchone()
        return {
            "first_week": row[0],
            "data_first_week": row[1],
            "last_week": row[2],
            "with_value": row[3],
            "rows": row[4],
        }

    def summary(self) -> dict:
        row = self.con.execute(
            """SELECT count(*), sum(tokens), count(*) FILTER (WHERE sampled),
                      count(*) FILTER (WHERE has_prompt), min(created_at), max(created_at),
                      count(DISTINCT model), count(DISTINCT user_key), count(DISTINCT week),
                      sum(reasoning_tokens), sum(completion_tokens)
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
            "users": row[7],
            "weeks": row[8],
            "reasoning_tokens": int(row[9] or 0),
            "completion_tokens": int(row[10] or 0),
            "classified": classified,
            "min_group": self.min_group,
        }

    def _sup(self, df: pd.DataFrame, values: list[str], group: list[str] | None = None):
        return suppress(df, self.min_group, values, group, use_users=self.has_users())

    # -- the analyses ---------------------------------------------------------
    def weekly_tokens(self) -> pd.DataFrame:
        """Requests and tokens per week, every request (a census, no sampling error)."""
        df = self.sql(
            """SELECT week, count(*) AS requests, count(DISTINCT user_key) AS users,
                      sum(tokens) AS tokens, sum(prompt_tokens) AS prompt_tokens,
                      sum(completion_tokens) AS completion_tokens,
                      sum(reasoning_tokens) AS reasoning_tokens
               FROM req GROUP BY week ORDER BY week"""
        )
        return self._sup(
            df, ["tokens", "prompt_tokens", "completion_tokens", "reasoning_tokens"], None
        )

    BUCKET_ROWS = "SELECT primary_bucket, tokens AS t, weight AS w, user_key AS u FROM cls ORDER BY request_id"

    def bucket_share(self, interval: str = "linear", reps: int = 1000, seed: int = 0):
        """Token share per primary bucket over the whole period, from the classified sample.

        ``interval="bootstrap"`` replaces the linearised interval by a bootstrap one.
        """
        if interval not in ("linear", "bootstrap"):
            raise ValueError(f"interval must be 'linear' or 'bootstrap', not {interval!r}")
        df = _share(self.con, self.BUCKET_ROWS, [], "primary_bucket")
        if interval == "bootstrap" and len(df):
            rows = self.sql(self.BUCKET_ROWS)
            fpc = self._fpc(rows)
            bs = estimate.bootstrap_share(rows, "primary_bucket", reps=reps, seed=seed, fpc=fpc)
            df = df.drop(columns=["se", "lo", "hi"]).merge(
                bs[["primary_bucket", "se", "lo", "hi"]], on="primary_bucket", how="left"
            )
        return self._sup(df, ["tokens", "share", "se", "lo", "hi"], [])

    def bucket_share_bootstrap(self) -> pd.DataFrame:
        return self.bucket_share(interval="bootstrap")

    @staticmethod
    def _fpc(rows: pd.DataFrame) -> float:
        """Finite-population correction 1 - mean inclusion probability of the sample."""
        w = rows["w"].to_numpy(float)
        return float(1 - np.mean(1 / np.maximum(w, 1))) if len(w) else 1.0

    def weekly_bucket_share(self, segment: str | None = None) -> pd.DataFrame:
        """Weekly token share by bucket per segment: ``all``, ``open_weights``, ``closed``,
        ``chinese_open``, ``rest_of_world_open`` (models of unknown origin are in ``all`` only)."""
        inner = """
            SELECT unnest(list_filter(['all', CASE WHEN open_weights THEN 'open_weights' END,
                                       CASE WHEN origin <> 'unknown' THEN origin END],
                                      lambda x: x IS NOT NULL)) AS segment,
                   week, primary_bucket, tokens AS t, weight AS w, user_key AS u
            FROM cls"""
        df = _share(self.con, inner, ["segment", "week"], "primary_bucket")
        if segment is not None:
            df = df[df["segment"] == segment].reset_index(drop=True)
        return self._sup(df, ["tokens", "share", "se", "lo", "hi"], ["segment", "week"])

    def author_share(self) -> pd.DataFrame:
        """Weekly share of all tokens per model author (every request)."""
        df = self.sql(
            """SELECT week, coalesce(author, 'unknown') AS author,
                      coalesce(any_value(author_name), 'unknown') AS author_name,
                      count(*) AS requests, count(DISTINCT user_key) AS users,
                      sum(tokens) AS tokens,
                      sum(tokens) / sum(sum(tokens)) OVER (PARTITION BY week) AS share
               FROM req GROUP BY 1, 2 ORDER BY week, tokens DESC"""
        )
        return self._sup(df, ["tokens", "share"], ["week"])

    def origin_share(self) -> pd.DataFrame:
        """Weekly share of all tokens: closed / chinese_open / rest_of_world_open / unknown."""
        df = self.sql(
            """SELECT week, origin, count(*) AS requests, count(DISTINCT user_key) AS users,
                      sum(tokens) AS tokens,
                      sum(tokens) / sum(sum(tokens)) OVER (PARTITION BY week) AS share
               FROM req GROUP BY 1, 2 ORDER BY week, origin"""
        )
        return self._sup(df, ["tokens", "share"], ["week"])

    def open_closed(self) -> pd.DataFrame:
        """Token shares by ``open_weights`` (open/closed) and by ``origin``, in three scopes:
        all traffic (every request), and within Programming and Roleplay (the sample).

        Shares are among models of known origin: unknown models (listed by
        :meth:`unknown_models`, and kept as ``unknown`` in :meth:`origin_share`) are left out,
        so that a handful of them cannot force the headline cells to be suppressed."""
        inner = """
            SELECT scope, unnest(['open_weights', 'origin']) AS dimension,
                   unnest([CASE WHEN open_weights THEN 'open' WHEN NOT open_weights THEN 'closed'
                                ELSE 'unknown' END, origin]) AS "group", t, w, u
            FROM (SELECT 'All traffic' AS scope, open_weights, origin, tokens AS t, 1.0 AS w,
                         user_key AS u FROM req WHERE open_weights IS NOT NULL
                  UNION ALL
                  SELECT primary_bucket, open_weights, origin, tokens, weight, user_key FROM cls
                  WHERE primary_bucket IN ('Programming', 'Roleplay')
                    AND open_weights IS NOT NULL)"""
        df = _share(self.con, inner, ["scope", "dimension"], '"group"')
        df = df.rename(columns={'"group"': "group"}) if '"group"' in df else df
        return self._sup(df, ["tokens", "share", "se", "lo", "hi"], ["scope", "dimension"])

    def subtags(self) -> pd.DataFrame:
        """Within each bucket, the token share of each sub-tag (Roleplay -> Games/Roleplaying
        Games, Writers Resources, Adult...)."""
        inner = """SELECT primary_bucket, coalesce(subtag, '(none)') AS subtag,
                          tokens AS t, weight AS w, user_key AS u FROM cls"""
        df = _share(self.con, inner, ["primary_bucket"], "subtag")
        return self._sup(df, ["tokens", "share", "se", "lo", "hi"], ["primary_bucket"])

    def author_mix(self) -> pd.DataFrame:
        """Within each author's traffic, the token share of each bucket (DeepSeek vs Anthropic)."""
        inner = """SELECT coalesce(author, 'unknown') AS author, primary_bucket,
                          tokens AS t, weight AS w, user_key AS u FROM cls"""
        df = _share(self.con, inner, ["author"], "primary_bucket")
        return self._sup(df, ["tokens", "share", "se", "lo", "hi"], ["author"])

    def reasoning_share(self) -> pd.DataFrame:
        """Per week, reasoning tokens over completion tokens and over all tokens, from the
        first week whose logs carry reasoning counts (requests without the field left out)."""
        df = self.sql(
            """SELECT week, count(*) AS requests, count(DISTINCT user_key) AS users,
                      sum(reasoning_tokens) AS reasoning_tokens,
                      sum(completion_tokens) AS completion_tokens, sum(tokens) AS tokens,
                      sum(reasoning_tokens) / nullif(sum(completion_tokens), 0) AS share,
                      sum(reasoning_tokens) / nullif(sum(tokens), 0) AS share_of_tokens,
                      sum(tokens) FILTER (WHERE reasoning_tokens > 0) / nullif(sum(tokens), 0)
                          AS reasoning_request_token_share
               FROM req WHERE reasoning_tokens IS NOT NULL
               GROUP BY week ORDER BY week"""
        )
        return self._sup(
            df,
            [
                "reasoning_tokens",
                "completion_tokens",
                "tokens",
                "share",
                "share_of_tokens",
                "reasoning_request_token_share",
            ],
        )

    def length(self) -> pd.DataFrame:
        """Mean prompt and completion tokens per request per week: ``All requests`` (every
        request) and per bucket (the sample, weighted)."""
        df = self.sql(
            """SELECT week, 'All requests' AS bucket, count(*) AS requests,
                      count(DISTINCT user_key) AS users,
                      avg(coalesce(prompt_tokens, 0)) AS mean_prompt_tokens,
                      avg(coalesce(completion_tokens, 0)) AS mean_completion_tokens
               FROM req GROUP BY ALL
               UNION ALL
               SELECT week, primary_bucket, count(*), count(DISTINCT user_key),
                      sum(weight * coalesce(prompt_tokens, 0)) / sum(weight),
                      sum(weight * coalesce(completion_tokens, 0)) / sum(weight)
               FROM cls GROUP BY ALL
               ORDER BY bucket, week"""
        )
        return self._sup(df, ["mean_prompt_tokens", "mean_completion_tokens"])

    def length_by_bucket(self) -> pd.DataFrame:
        """Mean prompt and completion tokens per request per bucket, whole period (sample)."""
        df = self.sql(
            """SELECT primary_bucket, count(*) AS requests, count(DISTINCT user_key) AS users,
                      sum(weight * coalesce(prompt_tokens, 0)) / sum(weight) AS mean_prompt_tokens,
                      sum(weight * coalesce(completion_tokens, 0)) / sum(weight)
                          AS mean_completion_tokens
               FROM cls GROUP BY ALL ORDER BY mean_prompt_tokens DESC"""
        )
        return self._sup(df, ["mean_prompt_tokens", "mean_completion_tokens"])

    def tool_calls(self) -> pd.DataFrame:
        """Per week: share of requests with tool calls > 0 and their share of tokens (every
        request whose log carries the field)."""
        df = self.sql(
            """SELECT week, count(*) AS requests, count(DISTINCT user_key) AS users,
                      count(*) FILTER (WHERE tool_calls > 0) AS tool_requests,
                      count(*) FILTER (WHERE tool_calls > 0) / count(*) AS request_share,
                      coalesce(sum(tokens) FILTER (WHERE tool_calls > 0), 0)
                          / nullif(sum(tokens), 0) AS token_share
               FROM req WHERE tool_calls IS NOT NULL GROUP BY week ORDER BY week"""
        )
        return self._sup(df, ["tool_requests", "request_share", "token_share"])

    def price_usage(self) -> pd.DataFrame:
        """Per model: price per million tokens and tokens used, for ``All requests`` (every
        request) and per bucket (weighted sample). Price is the logged cost per token where
        the logs carry cost, else the catalogue's list price blended by the model's own
        prompt/completion mix."""
        df = self.sql(
            """WITH price AS (
                 SELECT model, any_value(author) AS author, any_value(origin) AS origin,
                        1e6 * sum(cost_usd) FILTER (WHERE cost_usd IS NOT NULL)
                            / nullif(sum(tokens) FILTER (WHERE cost_usd IS NOT NULL), 0)
                            AS logged_price,
                        1e6 * (any_value(prompt_price) * sum(coalesce(prompt_tokens, 0))
                               + any_value(completion_price) * sum(coalesce(completion_tokens, 0)))
                            / nullif(sum(tokens), 0) AS list_price
                 FROM req WHERE model IS NOT NULL GROUP BY model),
               usage AS (
                 SELECT 'All requests' AS scope, model, sum(tokens) AS tokens,
                        count(*) AS requests, count(DISTINCT user_key) AS users
                 FROM req WHERE model IS NOT NULL GROUP BY ALL
                 UNION ALL
                 SELECT primary_bucket, model, sum(weight * tokens), count(*),
                        count(DISTINCT user_key)
                 FROM cls WHERE model IS NOT NULL GROUP BY ALL)
               SELECT u.scope, u.model, p.author, p.origin, u.requests, u.users, u.tokens,
                      CASE WHEN p.logged_price > 0 THEN p.logged_price ELSE p.list_price END
                          AS price_per_mtok,
                      CASE WHEN p.logged_price > 0 THEN 'logged cost'
                           WHEN p.list_price IS NOT NULL THEN 'list price' END AS price_source
               FROM usage u JOIN price p USING (model)
               ORDER BY u.scope, u.tokens DESC"""
        )
        return self._sup(df, ["tokens", "price_per_mtok"])

    def price_elasticity(self) -> pd.DataFrame:
        """Per scope: OLS slope of log(tokens) on log(price) over models (priced > 0, not
        suppressed), its standard error, and the median price and usage."""
        pu = self.price_usage()
        rows = []
        for scope, g in pu.groupby("scope", sort=False):
            g = g[~g["suppressed"] & (g["price_per_mtok"] > 0) & (g["tokens"] > 0)]
            fit = estimate.ols_loglog(g["price_per_mtok"], g["tokens"])
            rows.append(
                {
                    "scope": scope,
                    "models": fit["n"],
                    "elasticity": fit["slope"],
                    "se": fit["se"],
                    "lo": fit["slope"] - estimate.Z95 * fit["se"],
                    "hi": fit["slope"] + estimate.Z95 * fit["se"],
                    "intercept": fit["intercept"],
                    "median_price_per_mtok": g["price_per_mtok"].median(),
                    "median_tokens": g["tokens"].median(),
                }
            )
        df = pd.DataFrame(rows)
        if len(df):
            df["_all"] = df["scope"] != "All requests"
            df = df.sort_values(["_all", "scope"]).drop(columns="_all").reset_index(drop=True)
        return df

    def cohort_retention(self, max_k: int = 12) -> pd.DataFrame:
        """Per model and cohort week c (users whose first week with the model is c): the share
        still using the model in week c + k, k = 0..``max_k`` (only where c + k is observed).
        Needs user keys; cohorts of fewer than ``min_group`` users are suppressed."""
        df = self.sql(
            f"""WITH act AS (SELECT DISTINCT model, user_key, week FROM req
                             WHERE user_key IS NOT NULL AND model IS NOT NULL),
                   firsts AS (SELECT model, user_key, min(week) AS cohort FROM act GROUP BY ALL),
                   sizes AS (SELECT model, cohort, count(*) AS users FROM firsts GROUP BY ALL),
                   last AS (SELECT max(week) AS last_week FROM req),
                   ret AS (SELECT f.model, f.cohort,
                                  (datediff('day', f.cohort, a.week) // 7)::INTEGER AS k,
                                  count(*) AS active
                           FROM firsts f JOIN act a USING (model, user_key) GROUP BY ALL)
                SELECT s.model, s.cohort, ks.k::INTEGER AS k, s.users AS cohort_users,
                       s.users AS users, s.users AS requests,
                       coalesce(r.active, 0) AS active,
                       coalesce(r.active, 0) / s.users AS retention
                FROM sizes s CROSS JOIN range(0, {int(max_k) + 1}) ks(k) CROSS JOIN last
                LEFT JOIN ret r ON r.model = s.model AND r.cohort = s.cohort AND r.k = ks.k
                WHERE s.cohort + INTERVAL (ks.k * 7) DAY <= last.last_week
                ORDER BY s.model, s.cohort, ks.k"""
        )
        df = self._sup(df, ["active", "retention"])
        return df.drop(columns=["users", "requests"])

    def language_mix(self) -> pd.DataFrame:
        """Weekly share of tokens per language, over requests whose logs carry a language."""
        df = self.sql(
            """SELECT week, lower(language) AS language, count(*) AS requests,
                      count(DISTINCT user_key) AS users, sum(tokens) AS tokens,
                      sum(tokens) / sum(sum(tokens)) OVER (PARTITION BY week) AS share
               FROM req WHERE language IS NOT NULL AND language <> ''
               GROUP BY 1, 2 ORDER BY week, tokens DESC"""
        )
        return self._sup(df, ["tokens", "share"], ["week"])

    # -- classifier error ---------------------------------------------------------------
    def set_confusion(self, confusion, source: str = "") -> None:
        """Use this confusion matrix (``P(pred | true)`` or counts) for the adjustment."""
        self.confusion = confusion
        self.confusion_source = source or "given"

    def shipped_model(self) -> dict:
        """What the shipped local model's ``meta.json`` says about the classifier this store
        was classified with: ``{"metrics": ..., "confusion": ...}`` (empty if it does not apply).

        The held-out metrics and confusion matrix (``metrics.test`` and
        ``metrics.test_confusion``) apply only when the store's classifier id is that model's
        ``model_id``; the MiniLM variant (``model_id+minilm``) gets its own metrics, no matrix.
        """
        meta_path = DATA_DIR / "model" / "meta.json"
        if not meta_path.exists():
            return {}
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        used = self.meta().get("classifier", "")
        mid = str(meta.get("model_id", ""))
        metrics = meta.get("metrics") or {}
        if not mid or not used.startswith(mid):
            return {}
        if used == mid:
            conf = metrics.get("test_confusion") or meta.get("confusion")
            return {"metrics": metrics.get("test"), "confusion": conf, "source": meta_path.name}
        return {"metrics": metrics.get("test_minilm"), "confusion": None, "source": meta_path.name}

    def find_confusion(self) -> tuple[object | None, str | None]:
        """The confusion matrix set on this census, else the shipped local model's held-out
        one when the store was classified by that model; ``(None, None)`` if neither."""
        if self.confusion is not None:
            return self.confusion, self.confusion_source
        shipped = self.shipped_model()
        if shipped.get("confusion"):
            return shipped["confusion"], "the shipped model's held-out test set (meta.json)"
        return None, None

    def adjusted_bucket_share(
        self, confusion=None, buckets=None, reps: int = 200, seed: int = 0
    ) -> pd.DataFrame:
        """Raw classify-and-count bucket shares next to the ACC adjustment by ``confusion``
        (``P(predicted = j | true = i)``, a DataFrame, or an array with ``buckets``).

        The adjusted interval resamples the sampled requests (bootstrap, seed ``seed``) and,
        when the matrix holds counts, the matrix rows too. Empty when no matrix is known.
        """
        source = "given"
        if confusion is None:
            confusion, source = self.find_confusion()
        cols = [
            "bucket",
            "raw_share",
            "raw_lo",
            "raw_hi",
            "adjusted_share",
            "adjusted_lo",
            "adjusted_hi",
            "requests",
            "users",
            "suppressed",
            "source",
        ]
        if confusion is None:
            return pd.DataFrame(columns=cols)
        rows = self.sql(self.BUCKET_ROWS)
        if not len(rows):
            return pd.DataFrame(columns=cols)
        observed = rows.assign(wt=rows["w"] * rows["t"]).groupby("primary_bucket")["wt"].sum()
        reps_q = None
        if reps:
            names, _, sims = estimate.bootstrap_replicates(rows, "primary_bucket", reps, seed)
            reps_q = pd.DataFrame(sims, columns=names).reindex(
                columns=observed.index.astype(str), fill_value=0.0
            )
        adj = estimate.adjusted_shares(
            observed, confusion, buckets, reps=reps, seed=seed, replicates=reps_q
        )
        raw = _share(self.con, self.BUCKET_ROWS, [], "primary_bucket")
        raw = raw.rename(columns={"primary_bucket": "bucket", "lo": "raw_lo", "hi": "raw_hi"})[
            ["bucket", "raw_lo", "raw_hi", "requests", "users"]
        ]
        df = adj.merge(raw, on="bucket", how="left")
        df[["requests", "users"]] = df[["requests", "users"]].fillna(0)
        df["source"] = source
        df = self._sup(
            df,
            ["raw_share", "raw_lo", "raw_hi", "adjusted_share", "adjusted_lo", "adjusted_hi"],
            [],
        )
        return df[[c for c in cols if c in df]]

    # -- data quality ---------------------------------------------------------------------
    def unknown_models(self) -> pd.DataFrame:
        return self.sql(
            """SELECT model, count(*) AS requests, sum(tokens)::BIGINT AS tokens FROM req
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


def open(out_dir: str | Path, min_group: int | None = None) -> Census:  # noqa: A001
    """Open a run's output folder for analysis."""
    return Census(Path(out_dir), min_group=min_group)
