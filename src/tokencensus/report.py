"""One self-contained HTML report: the study's charts for the user's own traffic.

Charts are Altair/Vega-Lite specs; the Vega libraries are inlined from
``vl-convert-python``'s bundle, so the file opens offline and holds only
aggregates, never rows.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import altair as alt
import pandas as pd

from tokencensus.analyse import Census

alt.data_transformers.disable_max_rows()


@dataclass
class Chart:
    """A chart, its title, and a one-line reading of what it shows."""

    key: str
    title: str
    reading: str
    spec: dict | None
    note: str = ""


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed as one inline script (no network needed)."""
    import vl_convert as vlc

    return vlc.javascript_bundle()


def _pct(x: float | None) -> str:
    return "n/a" if x is None or pd.isna(x) else f"{100 * x:.1f}%"


def _spec(chart: alt.TopLevelMixin) -> dict:
    return chart.properties(width="container").to_dict()


def build_charts(c: Census) -> list[Chart]:
    """Every chart of the report, from the census tables."""
    charts: list[Chart] = []

    wt = c.weekly_tokens()
    if len(wt):
        spec = (
            alt.Chart(wt)
            .mark_area(opacity=0.8)
            .encode(
                x=alt.X("week:T", title="week"),
                y=alt.Y("tokens:Q", title="tokens (prompt + completion)"),
                tooltip=["week:T", "requests:Q", "tokens:Q"],
            )
        )
        peak = wt.loc[wt["tokens"].idxmax()]
        charts.append(
            Chart(
                "weekly_tokens",
                "Tokens per week",
                (
                    f"{int(wt['tokens'].sum()):,} tokens over {len(wt)} weeks; the busiest week "
                    f"({peak['week']:%Y-%m-%d}) had {int(peak['tokens']):,}."
                ),
                _spec(spec),
            )
        )

    bs = c.bucket_share()
    if len(bs):
        base = alt.Chart(bs).encode(y=alt.Y("primary_bucket:N", sort="-x", title=None))
        spec = base.mark_bar().encode(
            x=alt.X("share:Q", axis=alt.Axis(format="%"), title="share of classified tokens"),
            tooltip=[
                "primary_bucket",
                alt.Tooltip("share:Q", format=".1%"),
                alt.Tooltip("lo:Q", format=".1%"),
                alt.Tooltip("hi:Q", format=".1%"),
                "nb:Q",
            ],
        ) + base.mark_errorbar().encode(x="lo:Q", x2="hi:Q")
        top = bs.sort_values("share", ascending=False).iloc[0]
        charts.append(
            Chart(
                "bucket_share",
                "What the traffic is for",
                (
                    f"{top['primary_bucket']} is the largest bucket at {_pct(top['share'])} of tokens "
                    f"(95% interval {_pct(top['lo'])}–{_pct(top['hi'])}, sampling error only)."
                ),
                _spec(spec),
            )
        )

    for key, title, ow in (
        ("weekly_bucket_share", "Weekly token share by bucket, all models", None),
        ("weekly_bucket_share_open", "Weekly token share by bucket, open-weights models", True),
    ):
        wb = c.weekly_bucket_share(open_weights=ow)
        if not len(wb):
            charts.append(Chart(key, title, "No classified requests for this view.", None))
            continue
        spec = (
            alt.Chart(wb)
            .mark_area()
            .encode(
                x=alt.X("week:T"),
                y=alt.Y(
                    "share:Q", stack="normalize", axis=alt.Axis(format="%"), title="share of tokens"
                ),
                color=alt.Color("primary_bucket:N", title="bucket"),
                tooltip=[
                    "week:T",
                    "primary_bucket:N",
                    alt.Tooltip("share:Q", format=".1%"),
                    alt.Tooltip("lo:Q", format=".1%"),
                    alt.Tooltip("hi:Q", format=".1%"),
                ],
            )
        )
        rp = wb[wb["primary_bucket"] == "Roleplay"]["share"]
        reading = (
            f"Roleplay averages {_pct(rp.mean())} of weekly tokens here."
            if len(rp)
            else "No Roleplay traffic in this view."
        )
        charts.append(Chart(key, title, reading, _spec(spec)))

    au = c.author_share()
    if len(au):
        top_authors = au.groupby("author")["tokens"].sum().nlargest(9).index
        au = au.assign(author=au["author"].where(au["author"].isin(top_authors), "other"))
        au = au.groupby(["week", "author"], as_index=False)[["tokens", "share"]].sum()
        spec = (
            alt.Chart(au)
            .mark_area()
            .encode(
                x="week:T",
                y=alt.Y("share:Q", stack="normalize", axis=alt.Axis(format="%")),
                color=alt.Color("author:N"),
                tooltip=["week:T", "author:N", alt.Tooltip("share:Q", format=".1%")],
            )
        )
        lead = au.groupby("author")["tokens"].sum().idxmax()
        charts.append(
            Chart(
                "author_share",
                "Token share by model author",
                (f"{lead} serves the most tokens over the period."),
                _spec(spec),
            )
        )

    og = c.origin_share()
    if len(og):
        spec = (
            alt.Chart(og)
            .mark_area()
            .encode(
                x="week:T",
                y=alt.Y("share:Q", stack="normalize", axis=alt.Axis(format="%")),
                color=alt.Color("origin:N"),
                tooltip=["week:T", "origin:N", alt.Tooltip("share:Q", format=".1%")],
            )
        )
        tot = og.groupby("origin")["tokens"].sum()
        charts.append(
            Chart(
                "origin_share",
                "Closed vs Chinese open vs rest-of-world open",
                (
                    f"Open-weights models carry {_pct(tot.filter(like='open').sum() / tot.sum())} of tokens."
                ),
                _spec(spec),
            )
        )

    rs = c.reasoning_share()
    if len(rs):
        spec = (
            alt.Chart(rs)
            .mark_line(point=True)
            .encode(
                x="week:T",
                y=alt.Y(
                    "share:Q", axis=alt.Axis(format="%"), title="reasoning / completion tokens"
                ),
            )
        )
        charts.append(
            Chart(
                "reasoning_share",
                "Reasoning share of completion tokens",
                (
                    f"Reasoning tokens were {_pct(rs['share'].iloc[-1])} of completion tokens in the last week."
                ),
                _spec(spec),
                note=f"Starts {rs['week'].min():%Y-%m-%d}, the first week with reasoning counts.",
            )
        )

    lb = c.length_by_bucket()
    if len(lb):
        long = lb.melt(
            id_vars=["primary_bucket", "n"],
            value_vars=["mean_prompt_tokens", "mean_completion_tokens"],
            var_name="kind",
            value_name="tokens",
        )
        spec = (
            alt.Chart(long)
            .mark_bar()
            .encode(
                y=alt.Y("primary_bucket:N", title=None),
                x=alt.X("tokens:Q", title="mean tokens per request"),
                color="kind:N",
                yOffset="kind:N",
                tooltip=["primary_bucket", "kind", alt.Tooltip("tokens:Q", format=",.0f")],
            )
        )
        top = lb.iloc[0]
        charts.append(
            Chart(
                "length_by_bucket",
                "Prompt and completion length by bucket",
                (
                    f"{top['primary_bucket']} has the longest prompts ({top['mean_prompt_tokens']:,.0f} tokens on average)."
                ),
                _spec(spec),
            )
        )

    st = c.subtags()
    if len(st):
        st = st[st["primary_bucket"].isin(bs.nlargest(4, "share")["primary_bucket"])]
        spec = (
            alt.Chart(st)
            .mark_bar()
            .encode(
                y=alt.Y("subtag:N", sort="-x", title=None),
                x=alt.X("share:Q", axis=alt.Axis(format="%")),
                row=alt.Row("primary_bucket:N", title=None),
                tooltip=["primary_bucket", "subtag", alt.Tooltip("share:Q", format=".1%")],
            )
            .resolve_scale(y="independent")
        )
        charts.append(
            Chart(
                "subtags",
                "Sub-tags inside the largest buckets",
                "The mix of topics inside each bucket, by share of its tokens.",
                st_spec(spec),
            )
        )
    return charts


def st_spec(chart: alt.TopLevelMixin) -> dict:
    """Faceted charts cannot take a container width; keep a fixed one."""
    return chart.to_dict()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data:">
<title>tokencensus report</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}
.chart{{width:100%;margin:0.5em 0 2em}} .reading{{color:#333}} .note{{color:#777;font-size:90%}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
th{{background:#f3f3f3}}
</style></head><body>
<h1>What this traffic is for</h1>
{summary}
{sections}
<h2>Method and privacy</h2>
{method}
<h2>Classifier accuracy</h2>
{accuracy}
<h2>Data quality</h2>
{quality}
<script>{bundle}</script>
<script>
const specs = {specs};
window.__charts = {{total: Object.keys(specs).length, rendered: 0, errors: []}};
for (const [id, spec] of Object.entries(specs)) {{
  vegaEmbed('#' + id, spec, {{actions: false, renderer: 'svg'}})
    .then(() => {{ window.__charts.rendered += 1; }})
    .catch(err => {{ window.__charts.errors.push(id + ': ' + err); console.error(err); }});
}}
</script>
</body></html>
"""


def _table(df: pd.DataFrame) -> str:
    if df is None or not len(df):
        return "<p>None.</p>"
    return df.to_html(index=False, border=0, float_format=lambda x: f"{x:,.4g}")


def write_report(census: Census, path: Path, classifier=None, accuracy: dict | None = None) -> Path:
    """Render the report to ``path`` and return it."""
    s = census.summary()
    charts = build_charts(census)
    sections, specs = [], {}
    for ch in charts:
        body = (
            f'<div id="{ch.key}" class="chart"></div>'
            if ch.spec
            else '<p class="note">Nothing to show.</p>'
        )
        note = f'<p class="note">{html.escape(ch.note)}</p>' if ch.note else ""
        sections.append(
            f"<h2>{html.escape(ch.title)}</h2><p class='reading'>{html.escape(ch.reading)}</p>{note}{body}"
        )
        if ch.spec:
            specs[ch.key] = ch.spec
    summary = (
        f"<p>{s['requests']:,} requests and {s['tokens']:,} tokens from {s['first']:%Y-%m-%d} to "
        f"{s['last']:%Y-%m-%d}, {s['models']} models. {s['sampled']:,} requests were sampled "
        f"and {s['classified']:,} classified; {s['with_prompt']:,} requests carried prompt text.</p>"
        if s["requests"]
        else "<p>No requests.</p>"
    )
    info = classifier.info() if classifier is not None else {}
    meta = dict(census.con.execute("SELECT key, value FROM meta").fetchall())
    method = (
        "<p>Totals count every request's metadata. Category shares come from a deterministic "
        f"sample (rate {html.escape(meta.get('rate', '?'))}, keyed on a salted hash of the request id), "
        "weighted by inverse inclusion probabilities; bars show 95% intervals for sampling error. "
        f"Prompts were classified by <code>{html.escape(str(info.get('model_id', meta.get('classifier', '?'))))}</code> "
        "from their first 1,000 characters into Google's V2 content categories, then mapped to buckets "
        f"by the <code>{html.escape(meta.get('rules', '?'))}</code> rules.</p>"
        "<p>Privacy: prompt text was read in memory only and never written; user ids are keyed "
        "HMAC-SHA256 hashes; this page holds aggregates only.</p>"
    )
    acc = accuracy or info.get("metrics")
    accuracy_html = (
        _table(pd.DataFrame([{k: v for k, v in acc.items() if not isinstance(v, dict)}]))
        if acc
        else "<p>No measured accuracy recorded for this classifier.</p>"
    )
    quality = "<h3>Rejected records</h3>" + _table(census.data_quality())
    quality += "<h3>Unknown models (not guessed)</h3>" + _table(census.unknown_models().head(30))
    page = PAGE.format(
        summary=summary,
        sections="\n".join(sections),
        method=method,
        accuracy=accuracy_html,
        quality=quality,
        bundle=vega_bundle(),
        specs=json.dumps(specs, default=str),
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
