"""One self-contained HTML report: the study's charts for the user's own traffic.

Charts are Altair/Vega-Lite specs fed with aggregated tables only (categories
capped at a top N plus "other"); the Vega libraries are inlined from
``vl-convert-python``'s bundle, so the file opens offline, holds only
aggregates, never rows, and stays small whatever the input size.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from tokencensus.analyse import Census

alt.data_transformers.disable_max_rows()

TOP_N = 8
EST_ORDER = ["raw (classify and count)", "adjusted for classifier error (ACC)"]
OTHER = "other"
SUPPRESSED = "suppressed (small group)"
GREYS = {OTHER: "#b9b9b9", SUPPRESSED: "#e4e4e4", "unknown": "#8c8c8c"}
PALETTE = [
    "#4c78a8",
    "#f58518",
    "#54a24b",
    "#e45756",
    "#72b7b2",
    "#eeca3b",
    "#b279a2",
    "#ff9da6",
    "#9d755d",
    "#439894",
    "#d67195",
    "#79706e",
]
ORIGIN_COLORS = {
    "closed": "#4c78a8",
    "chinese_open": "#e45756",
    "rest_of_world_open": "#54a24b",
    "open": "#f58518",
    "unknown": "#8c8c8c",
    SUPPRESSED: "#e4e4e4",
}


@dataclass
class Chart:
    """A chart, its title, a one-line reading of what it shows, and notes."""

    key: str
    title: str
    reading: str
    spec: dict | None
    note: str = ""
    table: str = ""


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one inline script (no network needed)."""
    import vl_convert as vlc

    return vlc.javascript_bundle()


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or pd.isna(x) else f"{100 * x:.{digits}f}%"


def _num(x: float | None) -> str:
    if x is None or pd.isna(x):
        return "n/a"
    x = float(x)
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:,.0f}"


def _week(x) -> str:
    return "n/a" if x is None or pd.isna(x) else pd.Timestamp(x).strftime("%Y-%m-%d")


def _start_note(start: dict, what: str, always: bool = False) -> str:
    """ "Starts <week>, the first week whose logs carry <what>" for a chart whose field appears
    later than the data (``always``: say it anyway, with the data's own start)."""
    if start["first_week"] == start["data_first_week"] and not always:
        return ""
    note = f"Starts {_week(start['first_week'])}, the first week whose logs carry {what}"
    if always and start["data_first_week"] != start["first_week"]:
        note += f" (the data start {_week(start['data_first_week'])})"
    return note if always else note + "."


def _compact(df: pd.DataFrame) -> pd.DataFrame:
    """Dates as ISO strings and floats rounded, so the inlined data stays small."""
    df = df.copy()
    for c in df.columns:
        col = df[c]
        if pd.api.types.is_datetime64_any_dtype(col):
            df[c] = col.dt.strftime("%Y-%m-%d")
        elif pd.api.types.is_float_dtype(col):
            df[c] = col.round(6)
        elif col.dtype == object:
            df[c] = col.map(lambda v: v.isoformat()[:10] if hasattr(v, "isoformat") else v)
    return df


def _spec(chart: alt.TopLevelMixin, subtitle: str | None = None) -> dict | None:
    chart = chart.properties(width="container", height=260)
    spec = chart.to_dict()
    datasets = spec.get("datasets") or {}
    if datasets and not any(len(v) for v in datasets.values()):
        return None  # nothing left to draw (e.g. every cell suppressed)
    if subtitle:
        spec["title"] = {"text": "", "subtitle": subtitle, "subtitleColor": "#666"}
    return spec


def _color_scale(cats: list[str], fixed: dict[str, str] | None = None) -> alt.Scale:
    fixed = {**GREYS, **(fixed or {})}
    rng, i = [], 0
    for c in cats:
        if c in fixed:
            rng.append(fixed[c])
        else:
            rng.append(PALETTE[i % len(PALETTE)])
            i += 1
    return alt.Scale(domain=cats, range=rng)


def cap(
    df: pd.DataFrame, cat: str, value: str, n: int = TOP_N, keep: tuple[str, ...] = ()
) -> pd.Series:
    """``df[cat]`` with all but the ``n`` largest categories (by total ``value``) as "other"."""
    tot = df.groupby(cat)[value].sum().sort_values(ascending=False)
    top = [c for c in tot.index if c not in (SUPPRESSED, OTHER)][:n]
    return df[cat].where(df[cat].isin(list(top) + list(keep) + [SUPPRESSED]), OTHER)


def stack_frame(
    df: pd.DataFrame, group: list[str], cat: str, n: int = TOP_N, value: str = "share"
) -> pd.DataFrame:
    """Shares for a 100%-stacked chart: the top ``n`` categories, "other", and one
    "suppressed" block per group holding the blanked cells together (never one alone)."""
    if not len(df):
        return df
    vis = df[~df["suppressed"]].copy()
    vis[cat] = cap(vis, cat, value, n) if len(vis) else vis[cat]
    vis = vis.groupby(group + [cat], as_index=False)[value].sum()
    sup = df[df["suppressed"]].groupby(group, as_index=False).size()
    if len(sup):
        tot = vis.groupby(group, as_index=False)[value].sum().rename(columns={value: "_v"})
        sup = sup.merge(tot, on=group, how="left").fillna({"_v": 0.0})
        sup[value] = (1 - sup["_v"]).clip(lower=0)
        sup[cat] = SUPPRESSED
        vis = pd.concat([vis, sup[group + [cat, value]]], ignore_index=True)
    return vis


def _order(df: pd.DataFrame, cat: str, value: str) -> list[str]:
    tot = df.groupby(cat)[value].sum().sort_values(ascending=False)
    cats = [c for c in tot.index if c not in (OTHER, SUPPRESSED, "unknown")]
    return cats + [c for c in ("unknown", OTHER, SUPPRESSED) if c in tot.index]


WEEK_AXIS = alt.Axis(labelAngle=-45, labelOverlap=True, title="week")


def stacked_weekly(
    df: pd.DataFrame,
    cat: str,
    title: str,
    fixed: dict | None = None,
    subtitle: str | None = None,
    row: str | None = None,
    row_sort: list[str] | None = None,
) -> dict | None:
    """A 100%-stacked weekly bar chart of ``share`` by ``cat`` (small multiples by ``row``)."""
    cats = _order(df, cat, "share")
    d = _compact(df)
    d["_o"] = d[cat].map({c: i for i, c in enumerate(cats)})
    enc = {
        "x": alt.X("week:O", axis=WEEK_AXIS),
        "y": alt.Y(
            "share:Q", stack="normalize", axis=alt.Axis(format="%"), title="share of tokens"
        ),
        "color": alt.Color(f"{cat}:N", title=title, scale=_color_scale(cats, fixed), sort=cats),
        "order": alt.Order("_o:Q"),
        "tooltip": ["week:N", f"{cat}:N", alt.Tooltip("share:Q", format=".1%")],
    }
    if row is None:
        return _spec(alt.Chart(d).mark_bar().encode(**enc), subtitle)
    enc["row"] = alt.Row(
        f"{row}:N", sort=row_sort, title=None, header=alt.Header(labelAngle=0, labelAlign="left")
    )
    enc["y"] = alt.Y("share:Q", stack="normalize", axis=alt.Axis(format="%", title=None))
    enc["color"] = alt.Color(
        f"{cat}:N",
        title=title,
        scale=_color_scale(cats, fixed),
        sort=cats,
        legend=alt.Legend(orient="bottom", columns=4),
    )
    ch = alt.Chart(d).mark_bar().encode(**enc).properties(width=760, height=100)
    return _fixed_spec(ch, subtitle)


def _fixed_spec(chart: alt.TopLevelMixin, subtitle: str | None = None) -> dict | None:
    """A spec that keeps its own width (facets cannot take the container's)."""
    spec = chart.to_dict()
    datasets = spec.get("datasets") or {}
    if datasets and not any(len(v) for v in datasets.values()):
        return None
    if subtitle:
        spec["title"] = {"text": "", "subtitle": subtitle, "subtitleColor": "#666"}
    return spec


def _table(df: pd.DataFrame | None, max_rows: int = 40) -> str:
    if df is None or not len(df):
        return "<p>None.</p>"
    df = df.head(max_rows).copy()
    for c in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[c]):
            df[c] = df[c].dt.strftime("%Y-%m-%d")
    return df.to_html(index=False, border=0, na_rep="–", float_format=_fmt)


def _fmt(x: float) -> str:
    if float(x).is_integer() and abs(x) >= 1:
        return f"{x:,.0f}"
    return f"{x:,.4g}"


def _pct_table(df: pd.DataFrame, pct_cols: list[str]) -> str:
    d = df.copy()
    for c in pct_cols:
        if c in d:
            d[c] = d[c].map(lambda v: _pct(v) if not pd.isna(v) else "suppressed")
    return _table(d)


# -- the charts ------------------------------------------------------------------------------
def _mix_bars(df: pd.DataFrame, row: str, rows: list, part: str, legend: str, whose: str):
    """Normalised horizontal bars: each ``row``'s token share split by ``part`` (top 10)."""
    sf = stack_frame(df, [row], part, n=10)
    cats = _order(sf, part, "share")
    d = _compact(sf)
    d["_o"] = d[part].map({g: i for i, g in enumerate(cats)})
    return (
        alt.Chart(d)
        .mark_bar()
        .encode(
            y=alt.Y(f"{row}:N", sort=rows, title=None),
            x=alt.X(
                "share:Q",
                stack="normalize",
                axis=alt.Axis(format="%"),
                title=f"share of {whose} tokens",
            ),
            color=alt.Color(f"{part}:N", title=legend, scale=_color_scale(cats)),
            order=alt.Order("_o:Q"),
            tooltip=[f"{row}:N", f"{part}:N", alt.Tooltip("share:Q", format=".1%")],
        )
    )


def build_charts(c: Census, confusion_note: str = "") -> list[Chart]:
    """Every chart of the report, from the census tables (aggregates only)."""
    charts: list[Chart] = []
    k = c.min_group
    supp_note = (
        f"Grey 'suppressed' blocks hold cells with fewer than {k} requests or {k} users, "
        "blanked together."
    )

    # Weekly tokens -------------------------------------------------------------------------
    wt = c.weekly_tokens()
    if len(wt):
        vis = wt[~wt["suppressed"]]
        d = _compact(wt[["week", "requests", "tokens", "suppressed"]])
        spec = (
            alt.Chart(d)
            .mark_bar()
            .encode(
                x=alt.X("week:O", axis=WEEK_AXIS),
                y=alt.Y(
                    "tokens:Q", title="tokens (prompt + completion)", axis=alt.Axis(format="~s")
                ),
                tooltip=["week:N", "requests:Q", alt.Tooltip("tokens:Q", format=",.0f")],
            )
        )
        peak = vis.loc[vis["tokens"].idxmax()] if len(vis) else None
        reading = (
            f"{_num(vis['tokens'].sum())} tokens over {len(wt)} weeks; the busiest week "
            f"({_week(peak['week'])}) had {_num(peak['tokens'])}."
            if peak is not None
            else "Every week is below the small-group threshold."
        )
        charts.append(
            Chart("weekly_tokens", "Tokens per week (all requests)", reading, _spec(spec))
        )

    # Bucket shares, raw and adjusted ------------------------------------------------------
    bs = c.bucket_share()
    boot = c.bucket_share(interval="bootstrap", reps=1000, seed=0)
    adj = c.adjusted_bucket_share()
    if len(bs):
        vis = bs[~bs["suppressed"]].sort_values("share", ascending=False)
        rows = vis[["primary_bucket", "share", "lo", "hi"]].assign(
            estimate="raw (classify and count)"
        )
        if len(adj):
            a = adj[~adj["suppressed"]].rename(
                columns={
                    "bucket": "primary_bucket",
                    "adjusted_share": "share",
                    "adjusted_lo": "lo",
                    "adjusted_hi": "hi",
                }
            )[["primary_bucket", "share", "lo", "hi"]]
            rows = pd.concat(
                [rows, a.assign(estimate="adjusted for classifier error (ACC)")], ignore_index=True
            )
        order = vis["primary_bucket"].tolist()
        base = alt.Chart(_compact(rows)).encode(
            y=alt.Y("primary_bucket:N", sort=order, title=None),
            yOffset=alt.YOffset("estimate:N", sort=EST_ORDER),
        )
        spec = base.mark_bar().encode(
            x=alt.X("share:Q", axis=alt.Axis(format="%"), title="share of classified tokens"),
            color=alt.Color(
                "estimate:N",
                title=None,
                sort=EST_ORDER,
                scale=alt.Scale(domain=EST_ORDER, range=["#4c78a8", "#f58518"]),
                legend=alt.Legend(orient="bottom"),
            ),
            tooltip=[
                "primary_bucket:N",
                "estimate:N",
                alt.Tooltip("share:Q", format=".1%"),
                alt.Tooltip("lo:Q", format=".1%"),
                alt.Tooltip("hi:Q", format=".1%"),
            ],
        ) + base.mark_errorbar(color="black", ticks=True).encode(
            x=alt.X("lo:Q", title="share of classified tokens"), x2="hi:Q"
        )
        top = vis.iloc[0] if len(vis) else None
        reading = (
            f"{top['primary_bucket']} is the largest bucket at {_pct(top['share'])} of tokens "
            f"(95% interval {_pct(top['lo'])}–{_pct(top['hi'])}, sampling error)."
            if top is not None
            else "Every bucket is below the small-group threshold."
        )
        if len(adj) and top is not None:
            at = adj[adj["bucket"] == top["primary_bucket"]]
            if len(at) and not pd.isna(at["adjusted_share"].iloc[0]):
                reading += (
                    f" Adjusted for classifier error it is {_pct(at['adjusted_share'].iloc[0])}."
                )
        tbl = bs[["primary_bucket", "requests", "share", "lo", "hi", "suppressed"]].merge(
            boot[["primary_bucket", "lo", "hi"]].rename(
                columns={"lo": "bootstrap_lo", "hi": "bootstrap_hi"}
            ),
            on="primary_bucket",
            how="left",
        )
        if len(adj):
            tbl = tbl.merge(
                adj[["bucket", "adjusted_share", "adjusted_lo", "adjusted_hi"]].rename(
                    columns={"bucket": "primary_bucket"}
                ),
                on="primary_bucket",
                how="left",
            )
        tbl = tbl.sort_values("share", ascending=False, na_position="last")
        pct_cols = [c for c in tbl.columns if c not in ("primary_bucket", "requests", "suppressed")]
        note = (
            "Bars: 95% intervals. Raw: linearised ratio-estimator interval; the table also gives "
            "the bootstrap interval (1,000 resamples, seed 0). " + (confusion_note or "")
        )
        charts.append(
            Chart(
                "bucket_share",
                "What the traffic is for: token share by bucket",
                reading,
                _spec(spec),
                note=note,
                table=_pct_table(tbl, pct_cols),
            )
        )

    # Weekly bucket share per segment ------------------------------------------------------
    wb = c.weekly_bucket_share()
    segments = [
        ("all", "all models"),
        ("open_weights", "open weights"),
        ("closed", "closed"),
        ("chinese_open", "Chinese open"),
        ("rest_of_world_open", "rest-of-world open"),
    ]
    buckets_order = (
        bs[~bs["suppressed"]].sort_values("share", ascending=False)["primary_bucket"].tolist()
        if len(bs)
        else []
    )
    seg_label = dict(segments)
    if len(wb):
        frames = [
            stack_frame(wb[wb["segment"] == seg], ["week"], "primary_bucket", n=10).assign(
                segment=label
            )
            for seg, label in segments
            if (wb["segment"] == seg).any()
        ]
        sf = pd.concat(frames, ignore_index=True)
        vis = wb[~wb["suppressed"]]
        bits = []
        for b in ("Programming", "Roleplay"):
            m = vis[vis["primary_bucket"] == b].groupby("segment")["share"].mean()
            parts = [
                f"{_pct(m[seg])} ({seg_label[seg]})"
                for seg in ("open_weights", "closed")
                if seg in m
            ]
            if parts:
                bits.append(f"{b} averages " + " vs ".join(parts) + " of weekly tokens")
        reading = (
            ("; ".join(bits) + ".")
            if bits
            else "Most weekly cells are below the small-group threshold."
        )
        charts.append(
            Chart(
                "weekly_bucket_share",
                "Weekly token share by bucket: all, open weights, and per origin",
                reading,
                stacked_weekly(
                    sf,
                    "primary_bucket",
                    "bucket",
                    row="segment",
                    row_sort=[label for _, label in segments],
                ),
                note="Rows: all models; open-weights models; closed; Chinese open; rest-of-world "
                "open (models of unknown origin count only in 'all'). " + supp_note,
            )
        )
    else:
        charts.append(
            Chart(
                "weekly_bucket_share",
                "Weekly token share by bucket",
                "No classified requests.",
                None,
            )
        )

    # Authors ------------------------------------------------------------------------------
    au = c.author_share()
    if len(au):
        au2 = au.assign(
            author=au["author_name"].where(au["author_name"] != "unknown", au["author"])
        )
        sf = stack_frame(au2, ["week"], "author", n=TOP_N)
        vis = au2[~au2["suppressed"]]
        tot = vis.groupby("author")["tokens"].sum().sort_values(ascending=False)
        first, last = au2["week"].min(), au2["week"].max()
        lead = tot.index[0] if len(tot) else "n/a"
        lw = vis[vis["week"] == last].set_index("author")["share"]
        fw = vis[vis["week"] == first].set_index("author")["share"]
        reading = f"{lead} serves the most tokens over the period"
        if lead in lw and lead in fw:
            reading += f" ({_pct(fw[lead])} in the first week, {_pct(lw[lead])} in the last)"
        charts.append(
            Chart(
                "author_share",
                "Token share by model author (all requests)",
                reading + ".",
                stacked_weekly(sf, "author", "author"),
                note=f"Top {TOP_N} authors; the rest as 'other'. {supp_note}",
            )
        )

    og = c.origin_share()
    if len(og):
        sf = stack_frame(og, ["week"], "origin", n=10)
        vis = og[~og["suppressed"]]
        tot = vis.groupby("origin")["tokens"].sum()
        all_tok = c.summary()["tokens"]
        open_share = tot.filter(like="open").sum() / all_tok if all_tok else np.nan
        charts.append(
            Chart(
                "origin_share",
                "Closed vs Chinese open vs rest-of-world open (all requests)",
                f"Open-weights models carry {_pct(open_share)} of all tokens over the period.",
                stacked_weekly(sf, "origin", "origin", ORIGIN_COLORS),
                note="Origin is the model author's (bundled catalogue); 'unknown' = model not in "
                "the catalogue. " + supp_note,
            )
        )

    oc = c.open_closed()
    if len(oc):
        part = oc[oc["dimension"] == "origin"]
        sf = stack_frame(part, ["scope"], "group", n=10)
        cats = _order(sf, "group", "share")
        scopes = ["All traffic", "Programming", "Roleplay"]
        d = _compact(sf)
        d["_o"] = d["group"].map({g: i for i, g in enumerate(cats)})
        spec = (
            alt.Chart(d)
            .mark_bar()
            .encode(
                y=alt.Y("scope:N", sort=scopes, title=None),
                x=alt.X(
                    "share:Q", stack="normalize", axis=alt.Axis(format="%"), title="share of tokens"
                ),
                color=alt.Color("group:N", title="origin", scale=_color_scale(cats, ORIGIN_COLORS)),
                order=alt.Order("_o:Q"),
                tooltip=["scope:N", "group:N", alt.Tooltip("share:Q", format=".1%")],
            )
        )
        ow = oc[(oc["dimension"] == "open_weights") & (oc["group"] == "open")].set_index("scope")
        bits = [
            f"{s}: {_pct(ow.loc[s, 'share'])} open"
            for s in scopes
            if s in ow.index and not pd.isna(ow.loc[s, "share"])
        ]
        tbl = oc[["scope", "dimension", "group", "requests", "share", "lo", "hi", "suppressed"]]
        charts.append(
            Chart(
                "open_closed",
                "Open vs closed, overall and within Programming and Roleplay",
                ("Open-weights share of tokens — " + "; ".join(bits) + ".")
                if bits
                else "Open-weights shares are suppressed.",
                _spec(spec.properties(height=140)),
                note="All traffic: every request (no sampling error). Programming and Roleplay: "
                "the classified sample, with 95% intervals in the table. Shares among models of "
                "known origin.",
                table=_pct_table(tbl, ["share", "lo", "hi"]),
            )
        )

    # Sub-tags and author mix --------------------------------------------------------------
    st = c.subtags()
    if len(st):
        big = buckets_order[:5]
        part = st[st["primary_bucket"].isin(big)]
        spec = _mix_bars(part, "primary_bucket", big, "subtag", "sub-tag", "the bucket's")
        rp = st[(st["primary_bucket"] == "Roleplay") & ~st["suppressed"]].sort_values(
            "share", ascending=False
        )
        reading = (
            f"Inside Roleplay, '{rp.iloc[0]['subtag']}' leads with {_pct(rp.iloc[0]['share'])} "
            "of the bucket's tokens."
            if len(rp)
            else "The mix of topics inside each bucket, by share of its tokens."
        )
        charts.append(
            Chart(
                "subtags",
                "Sub-tags inside the largest buckets",
                reading,
                _spec(spec.properties(height=28 * max(len(big), 2))),
                note=supp_note,
            )
        )

    am = c.author_mix()
    if len(am):
        top_auth = (
            au[~au["suppressed"]].groupby("author")["tokens"].sum().nlargest(TOP_N).index.tolist()
            if len(au)
            else []
        )
        part = am[am["author"].isin(top_auth)]
        if len(part):
            spec = _mix_bars(part, "author", top_auth, "primary_bucket", "bucket", "the author's")
            best = part[~part["suppressed"]]
            reading = "Each author's traffic split by bucket."
            for b in ("Roleplay", "Programming"):
                x = best[best["primary_bucket"] == b].sort_values("share", ascending=False)
                if len(x):
                    reading = (
                        f"{b} is largest for {x.iloc[0]['author']} ({_pct(x.iloc[0]['share'])} "
                        "of its tokens)."
                    )
                    break
            charts.append(
                Chart(
                    "author_mix",
                    "Bucket mix per model author",
                    reading,
                    _spec(spec.properties(height=26 * max(len(top_auth), 2))),
                    note=f"The {TOP_N} largest authors. {supp_note}",
                )
            )

    # Reasoning --------------------------------------------------------------------------
    rs = c.reasoning_share()
    start = c.field_start("reasoning_tokens")
    if len(rs) and rs["share"].notna().any():
        d = _compact(rs[["week", "share", "share_of_tokens"]]).melt(
            id_vars="week", var_name="measure", value_name="value"
        )
        d["measure"] = d["measure"].map(
            {"share": "of completion tokens", "share_of_tokens": "of all tokens"}
        )
        spec = (
            alt.Chart(d)
            .mark_line(point=True)
            .encode(
                x=alt.X("week:O", axis=WEEK_AXIS),
                y=alt.Y("value:Q", axis=alt.Axis(format="%"), title="reasoning tokens"),
                color=alt.Color("measure:N", title=None),
                tooltip=["week:N", "measure:N", alt.Tooltip("value:Q", format=".1%")],
            )
        )
        last = rs[rs["share"].notna()].iloc[-1]
        note = _start_note(start, "reasoning counts", always=True)
        charts.append(
            Chart(
                "reasoning_share",
                "Reasoning share of tokens",
                f"Reasoning tokens were {_pct(last['share'])} of completion tokens in the last "
                f"week ({_week(last['week'])}).",
                _spec(spec, subtitle=note),
                note=note + ".",
            )
        )
    else:
        charts.append(
            Chart(
                "reasoning_share",
                "Reasoning share of tokens",
                "The logs carry no reasoning-token counts.",
                None,
            )
        )

    # Lengths ----------------------------------------------------------------------------
    ln = c.length()
    allreq = ln[(ln["bucket"] == "All requests") & ~ln["suppressed"]]
    if len(allreq):
        d = _compact(allreq[["week", "mean_prompt_tokens", "mean_completion_tokens"]]).melt(
            id_vars="week", var_name="kind", value_name="tokens"
        )
        d["kind"] = d["kind"].str.replace("mean_", "").str.replace("_tokens", "")
        spec = (
            alt.Chart(d)
            .mark_line(point=True)
            .encode(
                x=alt.X("week:O", axis=WEEK_AXIS),
                y=alt.Y("tokens:Q", title="mean tokens per request"),
                color=alt.Color("kind:N", title=None),
                tooltip=["week:N", "kind:N", alt.Tooltip("tokens:Q", format=",.0f")],
            )
        )
        f, last = allreq.iloc[0], allreq.iloc[-1]
        charts.append(
            Chart(
                "length",
                "Mean prompt and completion length per request, over time",
                f"Mean prompt length went from {_num(f['mean_prompt_tokens'])} to "
                f"{_num(last['mean_prompt_tokens'])} tokens, completion from "
                f"{_num(f['mean_completion_tokens'])} to {_num(last['mean_completion_tokens'])}.",
                _spec(spec),
                note="Per bucket and week in the exported table length.csv.",
            )
        )
    lb = c.length_by_bucket()
    lbv = lb[~lb["suppressed"]]
    if len(lbv):
        long = lbv.melt(
            id_vars=["primary_bucket", "requests"],
            value_vars=["mean_prompt_tokens", "mean_completion_tokens"],
            var_name="kind",
            value_name="tokens",
        )
        long["kind"] = long["kind"].str.replace("mean_", "").str.replace("_tokens", "")
        spec = (
            alt.Chart(_compact(long))
            .mark_bar()
            .encode(
                y=alt.Y("primary_bucket:N", title=None, sort=lbv["primary_bucket"].tolist()),
                x=alt.X("tokens:Q", title="mean tokens per request"),
                color=alt.Color("kind:N", title=None),
                yOffset="kind:N",
                tooltip=["primary_bucket", "kind", alt.Tooltip("tokens:Q", format=",.0f")],
            )
        )
        top = lbv.iloc[0]
        charts.append(
            Chart(
                "length_by_bucket",
                "Prompt and completion length by bucket",
                f"{top['primary_bucket']} has the longest prompts "
                f"({_num(top['mean_prompt_tokens'])} tokens on average).",
                _spec(spec),
            )
        )

    # Tool calls -------------------------------------------------------------------------
    tc = c.tool_calls()
    tstart = c.field_start("tool_calls")
    tcv = tc[~tc["suppressed"]] if len(tc) else tc
    if len(tcv):
        d = _compact(tcv[["week", "request_share", "token_share"]]).melt(
            id_vars="week", var_name="measure", value_name="value"
        )
        d["measure"] = d["measure"].map(
            {"request_share": "of requests", "token_share": "of tokens"}
        )
        spec = (
            alt.Chart(d)
            .mark_line(point=True)
            .encode(
                x=alt.X("week:O", axis=WEEK_AXIS),
                y=alt.Y("value:Q", axis=alt.Axis(format="%"), title="requests with tool calls"),
                color=alt.Color("measure:N", title=None),
                tooltip=["week:N", "measure:N", alt.Tooltip("value:Q", format=".1%")],
            )
        )
        tot_req = tc["requests"].sum()
        share = tc["tool_requests"].sum() / tot_req if tot_req else np.nan
        note = _start_note(tstart, "tool-call counts")
        charts.append(
            Chart(
                "tool_calls",
                "Requests with tool calls",
                f"{_pct(share)} of requests made tool calls; they carry "
                f"{_pct(tcv['token_share'].mean())} of tokens in an average week.",
                _spec(spec, subtitle=note or None),
                note=note,
            )
        )
    else:
        charts.append(
            Chart(
                "tool_calls",
                "Requests with tool calls",
                "The logs carry no tool-call counts.",
                None,
            )
        )

    # Price vs usage ---------------------------------------------------------------------
    pu = c.price_usage()
    el = c.price_elasticity()
    allp = pu[(pu["scope"] == "All requests") & ~pu["suppressed"] & (pu["price_per_mtok"] > 0)]
    if len(allp) >= 2:
        fit = el[el["scope"] == "All requests"].iloc[0]
        d = _compact(allp[["model", "origin", "tokens", "price_per_mtok", "price_source"]])
        ocats = [o for o in ORIGIN_COLORS if o in set(d["origin"])]
        pts = (
            alt.Chart(d)
            .mark_circle(size=70, opacity=0.85)
            .encode(
                x=alt.X(
                    "price_per_mtok:Q",
                    scale=alt.Scale(type="log"),
                    title="price, USD per million tokens (log)",
                ),
                y=alt.Y(
                    "tokens:Q",
                    scale=alt.Scale(type="log"),
                    title="tokens used (log)",
                    axis=alt.Axis(format="~s"),
                ),
                color=alt.Color("origin:N", scale=_color_scale(ocats, ORIGIN_COLORS)),
                tooltip=[
                    "model:N",
                    "origin:N",
                    alt.Tooltip("price_per_mtok:Q", format=",.3f"),
                    alt.Tooltip("tokens:Q", format=",.0f"),
                    "price_source:N",
                ],
            )
        )
        layers = [pts]
        xmed = pd.DataFrame({"x": [fit["median_price_per_mtok"]]})
        ymed = pd.DataFrame({"y": [fit["median_tokens"]]})
        layers.append(alt.Chart(xmed).mark_rule(strokeDash=[4, 4], color="#999").encode(x="x:Q"))
        layers.append(alt.Chart(ymed).mark_rule(strokeDash=[4, 4], color="#999").encode(y="y:Q"))
        if not pd.isna(fit["elasticity"]):
            xs = np.array([allp["price_per_mtok"].min(), allp["price_per_mtok"].max()])
            fl = pd.DataFrame(
                {"x": xs, "y": np.exp(fit["intercept"] + fit["elasticity"] * np.log(xs))}
            )
            layers.append(alt.Chart(fl).mark_line(color="black").encode(x="x:Q", y="y:Q"))
        spec = alt.layer(*layers)
        reading = (
            f"Elasticity (slope of log usage on log price over {int(fit['models'])} models): "
            f"{fit['elasticity']:.2f} ± {1.96 * fit['se']:.2f}; median price "
            f"${fit['median_price_per_mtok']:.2f} per million tokens."
            if not pd.isna(fit["elasticity"])
            else f"Too few priced models ({int(fit['models'])}) to fit an elasticity."
        )
        charts.append(
            Chart(
                "price_usage",
                "Price vs usage per model",
                reading,
                _spec(spec, subtitle="dashed: median price and median usage; line: log-log fit"),
                note="Price is the logged cost per token where logs carry cost, else the "
                "catalogue's list price; free models (price 0) cannot be placed on a log axis.",
            )
        )
        elb = el[el["scope"] != "All requests"].dropna(subset=["elasticity"])
        if len(elb):
            base = alt.Chart(_compact(elb)).encode(
                y=alt.Y("scope:N", title=None, sort=elb["scope"].tolist())
            )
            spec = base.mark_point(filled=True, size=60).encode(
                x=alt.X("elasticity:Q", title="elasticity (slope of log tokens on log price)"),
                tooltip=[
                    "scope:N",
                    "models:Q",
                    alt.Tooltip("elasticity:Q", format=".2f"),
                    alt.Tooltip("se:Q", format=".2f"),
                ],
            ) + base.mark_errorbar().encode(
                x=alt.X("lo:Q", title="elasticity (slope of log tokens on log price)"), x2="hi:Q"
            )
            zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="#999").encode(x="x:Q")
            spec = zero + spec
            charts.append(
                Chart(
                    "price_elasticity",
                    "Price elasticity per bucket",
                    "Bars are 95% intervals from the slope's standard error; "
                    + ", ".join(
                        f"{r.scope}: {r.elasticity:.2f}" for r in elb.itertuples(index=False)
                    )
                    + ".",
                    _spec(spec.properties(height=28 * max(len(elb), 2))),
                    table=_table(el.drop(columns=["intercept"])),
                )
            )

    # Cohort retention ---------------------------------------------------------------------
    cr = c.cohort_retention()
    if len(cr) and (~cr["suppressed"]).any():
        ok = cr[~cr["suppressed"]]
        size = ok[ok["k"] == 0].groupby("model")["cohort_users"].sum().nlargest(4)
        part = ok[ok["model"].isin(size.index) & (ok["k"] > 0)]
        d = _compact(part[["model", "cohort", "k", "cohort_users", "retention"]])
        spec = (
            alt.Chart(d)
            .mark_rect()
            .encode(
                x=alt.X("k:O", title="weeks since first use"),
                y=alt.Y("cohort:O", title="cohort (first week)"),
                color=alt.Color(
                    "retention:Q",
                    title="still active",
                    scale=alt.Scale(scheme="blues"),
                    legend=alt.Legend(format="%"),
                ),
                column=alt.Column(
                    "model:N",
                    sort=size.index.tolist(),
                    title=None,
                    header=alt.Header(labelFontSize=11),
                ),
                tooltip=[
                    "model:N",
                    "cohort:N",
                    "k:O",
                    "cohort_users:Q",
                    alt.Tooltip("retention:Q", format=".1%"),
                ],
            )
            .properties(width=170, height=220)
        )
        p1 = part[part["k"] == 1].groupby("model")[["active", "cohort_users"]].sum()
        p1 = (p1["active"] / p1["cohort_users"]).sort_values(ascending=False)
        reading = (
            f"One week after first use, {_pct(p1.iloc[0])} of {p1.index[0]}'s new users are "
            f"still active (pooled over cohorts); {_pct(p1.iloc[-1])} for {p1.index[-1]}."
            if len(p1)
            else "Retention of each model's user cohorts."
        )
        charts.append(
            Chart(
                "cohort_retention",
                "Cohort retention per model",
                reading,
                _fixed_spec(spec),
                note=f"Each row is a cohort: the users whose first week with the model it was; "
                f"cells show the share active k weeks later. Cohorts of fewer than {k} users "
                "are suppressed (blank). The four models with the most users; every model is in "
                "cohort_retention.csv.",
            )
        )
    else:
        charts.append(
            Chart(
                "cohort_retention",
                "Cohort retention per model",
                "No user keys in the logs (or every cohort is below the small-group threshold): "
                "retention cannot be measured.",
                None,
            )
        )

    # Language -------------------------------------------------------------------------
    lm = c.language_mix()
    if len(lm):
        lstart = c.field_start("language")
        sf = stack_frame(lm, ["week"], "language", n=TOP_N)
        vis = lm[~lm["suppressed"]].groupby("language")["tokens"].sum().sort_values(ascending=False)
        note = _start_note(lstart, "a language")
        charts.append(
            Chart(
                "language_mix",
                "Language mix",
                (
                    f"{vis.index[0]} carries {_pct(vis.iloc[0] / lm['tokens'].sum())} of tokens with a "
                    "known language."
                )
                if len(vis)
                else "Every language cell is below the small-group threshold.",
                stacked_weekly(sf, "language", "language", subtitle=note or None),
                note=(note + " " + supp_note).strip(),
            )
        )
    else:
        charts.append(
            Chart(
                "language_mix",
                "Language mix",
                "The logs carry no language field, so the language mix is not shown.",
                None,
            )
        )
    return charts


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data:">
<title>tokencensus report</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}
.chart{{width:100%;margin:0.5em 0 2em}} .reading{{color:#333;font-weight:500}} .note{{color:#777;font-size:90%}}
table{{border-collapse:collapse;font-size:90%;margin:0.5em 0}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
th{{background:#f3f3f3}} details{{margin-bottom:1.5em}} summary{{cursor:pointer;color:#555}}
.warn{{background:#fff6e0;padding:0.5em 1em;border-left:4px solid #e0a800}}
</style></head><body>
<h1>What this traffic is for</h1>
{summary}
{sections}
<h2>Method</h2>
{method}
<h2>Privacy</h2>
{privacy}
<h2>Classifier accuracy</h2>
{accuracy}
<h2>Data quality</h2>
{quality}
<script>{bundle}</script>
<script>
const specs = {specs};
window.__charts = {{total: Object.keys(specs).length, rendered: 0, errors: []}};
for (const [id, c] of Object.entries(specs)) {{
  vegaEmbed('#' + id, c.spec, {{actions: false, renderer: 'svg', mode: c.mode}})
    .then(() => {{ window.__charts.rendered += 1; }})
    .catch(err => {{ window.__charts.errors.push(id + ': ' + err); console.error(err); }});
}}
</script>
</body></html>
"""


def _compile(spec: dict) -> dict:
    """Vega-Lite -> Vega ahead of time, so the browser only renders (about 20% faster to
    open); the Vega-Lite spec is kept if the compiler is unavailable."""
    try:
        import vl_convert as vlc

        return {"mode": "vega", "spec": vlc.vegalite_to_vega(spec)}
    except Exception:  # pragma: no cover - vl-convert missing or a spec it rejects
        return {"mode": "vega-lite", "spec": spec}


def _accuracy_html(acc: dict | None, source: str) -> str:
    if not acc:
        return (
            "<p class='warn'>No measured accuracy recorded for this classifier: bucket shares "
            "carry classifier error of unknown size.</p>"
        )
    flat = {
        k: v
        for k, v in acc.items()
        if not isinstance(v, dict | list) and k not in ("prompts_per_second",)
    }
    out = f"<p>Measured on held-out labelled prompts ({html.escape(source)}).</p>"
    out += _table(pd.DataFrame([flat]))
    pb = acc.get("per_bucket")
    if isinstance(pb, dict) and pb:
        out += "<details><summary>Per bucket</summary>"
        out += _table(pd.DataFrame(pb).T.reset_index(names="bucket"))
        out += "</details>"
    return out


def write_report(census: Census, path: Path, classifier=None, accuracy: dict | None = None) -> Path:
    """Render the report to ``path`` and return it."""
    s = census.summary()
    info = {}
    if classifier is not None:
        try:
            info = classifier.info() or {}
        except Exception:  # a backend whose info() fails still gets a report
            info = {}
    shipped = census.shipped_model()
    meta = census.meta()
    used = meta.get("classifier", "")
    # The classifier's measured accuracy and confusion matrix.
    acc, acc_source = accuracy, "given"
    if not acc and isinstance(info.get("metrics"), dict):
        acc, acc_source = info["metrics"], f"{info.get('model_id', 'classifier')} info()"
    if not acc and shipped.get("metrics"):
        acc, acc_source = shipped["metrics"], "the shipped model's meta.json, held-out test set"
    conf = info.get("confusion") or (info.get("metrics") or {}).get("confusion")
    if conf is None and accuracy:
        conf = accuracy.get("confusion")
    if conf is not None and census.confusion is None:
        census.set_confusion(conf, "the classifier's held-out evaluation")
    confusion, conf_source = census.find_confusion()
    confusion_note = (
        f"Adjusted bars use the confusion matrix from {conf_source} (ACC: constrained least squares)."
        if confusion is not None
        else "No confusion matrix is available for this classifier, so shares are not adjusted "
        "for classifier error (only the raw classify-and-count figures are shown)."
    )
    charts = build_charts(census, confusion_note)

    sections, specs = [], {}
    for ch in charts:
        body = (
            f'<div id="{ch.key}" class="chart"></div>'
            if ch.spec
            else '<p class="note">No chart: the data lack this field, or every cell is below '
            "the small-group threshold.</p>"
        )
        note = f'<p class="note">{html.escape(ch.note)}</p>' if ch.note else ""
        table = f"<details><summary>Table</summary>{ch.table}</details>" if ch.table else ""
        sections.append(
            f"<h2>{html.escape(ch.title)}</h2><p class='reading'>{html.escape(ch.reading)}</p>"
            f"{note}{body}{table}"
        )
        if ch.spec:
            specs[ch.key] = _compile(ch.spec)

    if s["requests"]:
        summary = (
            f"<p>{s['requests']:,} requests and {s['tokens']:,} tokens from {s['first']:%Y-%m-%d} "
            f"to {s['last']:%Y-%m-%d} ({s['weeks']} weeks), {s['models']} models"
            + (f", {s['users']:,} distinct users" if s["users"] else "")
            + f". {s['sampled']:,} requests were sampled and {s['classified']:,} classified; "
            f"{s['with_prompt']:,} requests carried prompt text.</p>"
        )
        bs = census.bucket_share()
        vis = bs[~bs["suppressed"]].sort_values("share", ascending=False)
        if len(vis):
            summary += (
                "<ul>"
                + "".join(
                    f"<li>{html.escape(str(r.primary_bucket))}: {_pct(r.share)} of classified tokens "
                    f"({_pct(r.lo)}–{_pct(r.hi)})</li>"
                    for r in vis.head(4).itertuples(index=False)
                )
                + "</ul>"
            )
        if confusion is None:
            summary += f"<p class='note'>{html.escape(confusion_note)}</p>"
        k = census.min_group
        if census.has_users() and s["users"] < k:
            summary += (
                f"<p class='warn'>The logs hold only {s['users']} distinct user key(s), fewer than "
                f"the small-group threshold of {k}: every figure by group is suppressed. If this "
                "page stays with you, rerun the report with TOKENCENSUS_MIN_GROUP=1.</p>"
            )
    else:
        summary = "<p>No requests.</p>"

    rate = meta.get("rate", "?")
    method = (
        "<p>Tokens are prompt + completion tokens (reasoning tokens are counted inside "
        "completion). Totals (tokens per week, authors, origins, reasoning, tool calls, lengths "
        "for all requests, price vs usage overall, retention, language) count every request's "
        "metadata and carry no sampling error. Category shares come from a deterministic "
        f"sample (rate {html.escape(rate)}, keyed on a salted hash of the request id), weighted by "
        "inverse inclusion probabilities (a ratio estimator). Their 95% intervals are the "
        "linearised (Taylor) interval of that ratio, with the finite-population correction; the "
        "bucket table also gives a bootstrap interval (sampled requests resampled with "
        "replacement, 1,000 times, seed 0), which should agree with it.</p>"
        f"<p>Prompts were classified by <code>{html.escape(str(info.get('model_id', used or '?')))}"
        "</code> from their first 1,000 characters into Google's content categories, then mapped "
        f"to buckets by the <code>{html.escape(meta.get('rules', '?'))}</code> rules. "
        f"{html.escape(confusion_note)} The adjustment solves observed = C<sup>T</sup> × true "
        "for the true shares (non-negative, summing to one), where C[i, j] = P(predicted j | "
        "true i); its interval resamples the sample and, where the matrix holds counts, the "
        "evaluation set's rows. It assumes errors do not depend on prompt length.</p>"
        "<p>Model author, origin and open weights come from the bundled catalogue snapshot "
        "(OpenRouter's model list of 2025-12-31) or the user's own catalogue; logged names are "
        "matched by id, canonical slug, variant suffix and full date suffix. Unknown models are "
        "listed below and never guessed. Charts start where their field starts to exist in the "
        "logs and say so. See docs/report.md for every chart's definition.</p>"
    )
    k = census.min_group
    privacy = (
        "<p>Prompt text was read in memory only and never written; user ids are keyed "
        "HMAC-SHA256 hashes; this page holds aggregates only, never a row.</p>"
        f"<p>Small groups: a cell (bucket, author, model, origin, language, sub-tag, cohort, or "
        f"any of these by week) with fewer than {k} requests or, where user keys exist, fewer "
        f"than {k} distinct users is suppressed: its figures are blanked in the tables and "
        "shown only inside a grey 'suppressed' block in the charts. Where a group's cells add "
        "up to 100%, more of its smallest cells are blanked until the blanked ones are at least "
        f"two and hold at least {k} requests, so none can be recovered by subtraction. The "
        "data-quality lists below (reject reasons, unknown model names) are not suppressed.</p>"
    )
    quality = "<h3>Rejected records</h3>" + _table(census.data_quality())
    um = census.unknown_models()
    quality += (
        f"<h3>Unknown models ({len(um)}, not guessed)</h3>"
        + (
            f"<p>{_pct(um['tokens'].sum() / s['tokens'] if s['tokens'] else np.nan)} of tokens are "
            "from models the catalogue does not know; they count as origin 'unknown'. Pass your own "
            "catalogue (<code>catalog_dir</code>) to place them.</p>"
            if len(um)
            else ""
        )
        + _table(um.head(30))
    )
    page = PAGE.format(
        summary=summary,
        sections="\n".join(sections),
        method=method,
        privacy=privacy,
        accuracy=_accuracy_html(acc, acc_source),
        quality=quality,
        bundle=vega_bundle(),
        specs=json.dumps(specs, default=str, separators=(",", ":")).replace("</", "<\\/"),
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
