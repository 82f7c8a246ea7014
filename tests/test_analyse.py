"""Analyses checked against independent computations over the exported Parquet files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from tokencensus import analyse, estimate, pipeline
from tokencensus.analyse import suppress


@pytest.fixture(scope="module")
def run_out(demo_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("analyse-out")
    pipeline.run(
        [demo_log], pipeline.RunOptions(out=out, rate=0.2, classifier="keyword", report=False)
    )
    return out


@pytest.fixture(scope="module")
def frames(run_out: Path) -> dict[str, pd.DataFrame]:
    """The exported Parquet tables, read with pandas (independent of the SQL views)."""
    req = ds.dataset(run_out / "parquet" / "requests", partitioning="hive").to_table().to_pandas()
    req["tokens"] = req["prompt_tokens"].fillna(0) + req["completion_tokens"].fillna(0)
    req["week"] = pd.to_datetime(req["week"]).dt.date
    cat = pd.read_parquet(run_out / "parquet" / "catalog.parquet")
    asg = pd.read_parquet(run_out / "parquet" / "assignments.parquet")
    req = req.merge(cat, left_on="model", right_on="key", how="left")
    req["origin"] = np.select(
        [req["open_weights"].isna(), req["open_weights"] == False, req["origin_group"] == "china"],  # noqa: E712
        ["unknown", "closed", "chinese_open"],
        "rest_of_world_open",
    )
    cls = req[req["sampled"]].merge(asg, on="request_id")
    return {"req": req, "cls": cls}


@pytest.fixture(scope="module")
def census(run_out: Path):
    c = analyse.open(run_out, min_group=1)
    yield c
    c.close()


def _week(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s).dt.date


# -- numbers against pandas ---------------------------------------------------------------
def test_weekly_tokens(census, frames) -> None:
    got = census.weekly_tokens().assign(week=lambda d: _week(d["week"])).set_index("week")
    want = frames["req"].groupby("week")["tokens"].sum()
    assert got["tokens"].to_dict() == pytest.approx(want.to_dict())
    assert int(got["requests"].sum()) == len(frames["req"]) == 3000


def test_bucket_share_and_linearised_interval(census, frames) -> None:
    cls = frames["cls"]
    wt = cls["weight"] * cls["tokens"]
    want = wt.groupby(cls["primary_bucket"]).sum() / wt.sum()
    got = census.bucket_share().set_index("primary_bucket")
    assert got["share"].to_dict() == pytest.approx(want.to_dict())
    assert got["share"].sum() == pytest.approx(1.0)
    # Linearised variance of the ratio, with the finite-population correction (1 - 1/w).
    for b, r in got.iterrows():
        y = (cls["primary_bucket"] == b).astype(float)
        z = (1 - 1 / cls["weight"]) * (wt * (y - want[b])) ** 2
        assert r["se"] == pytest.approx(np.sqrt(z.sum()) / wt.sum(), rel=1e-6)
        assert r["lo"] <= r["share"] <= r["hi"]


def test_bootstrap_agrees_with_linearised(census) -> None:
    lin = census.bucket_share().set_index("primary_bucket")
    boot = census.bucket_share(interval="bootstrap", reps=600, seed=1).set_index("primary_bucket")
    assert boot["share"].to_dict() == pytest.approx(lin["share"].to_dict())
    big = lin[lin["share"] > 0.05].index
    assert len(big) >= 2
    ratio = boot.loc[big, "se"] / lin.loc[big, "se"]
    assert ratio.between(0.75, 1.33).all(), ratio
    # Deterministic: the same seed gives the same interval.
    again = census.bucket_share(interval="bootstrap", reps=600, seed=1).set_index("primary_bucket")
    assert again["lo"].to_dict() == boot["lo"].to_dict()


def test_weekly_bucket_share_segments(census, frames) -> None:
    df = census.weekly_bucket_share()
    assert set(df["segment"]) <= {
        "all",
        "open_weights",
        "closed",
        "chinese_open",
        "rest_of_world_open",
    }
    cls = frames["cls"].assign(wt=lambda d: d["weight"] * d["tokens"])
    for seg, sub in (("all", cls), ("open_weights", cls[cls["open_weights"] == True])):  # noqa: E712
        want = sub.groupby(["week", "primary_bucket"])["wt"].sum() / sub.groupby("week")["wt"].sum()
        got = df[df["segment"] == seg].assign(week=lambda d: _week(d["week"]))
        got = got.set_index(["week", "primary_bucket"])["share"]
        assert got.to_dict() == pytest.approx(want.to_dict())
    sums = df.groupby(["segment", "week"])["share"].sum()
    assert np.allclose(sums, 1.0)


def test_author_and_origin_share(census, frames) -> None:
    req = frames["req"].assign(author=lambda d: d["author"].fillna("unknown"))
    want = req.groupby(["week", "author"])["tokens"].sum() / req.groupby("week")["tokens"].sum()
    got = census.author_share().assign(week=lambda d: _week(d["week"]))
    assert got.set_index(["week", "author"])["share"].to_dict() == pytest.approx(want.to_dict())
    want = req.groupby(["week", "origin"])["tokens"].sum() / req.groupby("week")["tokens"].sum()
    got = census.origin_share().assign(week=lambda d: _week(d["week"]))
    assert got.set_index(["week", "origin"])["share"].to_dict() == pytest.approx(want.to_dict())


def test_open_closed_scopes(census, frames) -> None:
    df = census.open_closed()
    assert set(df["scope"]) == {"All traffic", "Programming", "Roleplay"}
    allt = df[(df["scope"] == "All traffic") & (df["dimension"] == "origin")]
    req = frames["req"][frames["req"]["origin"] != "unknown"]  # shares among known models
    want = req.groupby("origin")["tokens"].sum() / req["tokens"].sum()
    assert allt.set_index("group")["share"].to_dict() == pytest.approx(want.to_dict())
    assert (allt["se"] == 0).all()  # a census has no sampling error
    cls = frames["cls"]
    prog = cls[(cls["primary_bucket"] == "Programming") & cls["open_weights"].notna()]
    wt = prog["weight"] * prog["tokens"]
    closed = wt[prog["open_weights"] == False].sum() / wt.sum()  # noqa: E712
    got = df[(df["scope"] == "Programming") & (df["group"] == "closed")]["share"].iloc[0]
    assert got == pytest.approx(closed)


def test_subtags_and_author_mix(census, frames) -> None:
    cls = frames["cls"].assign(
        wt=lambda d: d["weight"] * d["tokens"], subtag=lambda d: d["subtag"].fillna("(none)")
    )
    want = (
        cls.groupby(["primary_bucket", "subtag"])["wt"].sum()
        / cls.groupby("primary_bucket")["wt"].sum()
    )
    got = census.subtags().set_index(["primary_bucket", "subtag"])["share"]
    assert got.to_dict() == pytest.approx(want.to_dict())
    cls["author"] = cls["author"].fillna("unknown")
    want = cls.groupby(["author", "primary_bucket"])["wt"].sum() / cls.groupby("author")["wt"].sum()
    got = census.author_mix().set_index(["author", "primary_bucket"])["share"]
    assert got.to_dict() == pytest.approx(want.to_dict())


def test_reasoning_starts_where_the_field_exists(census, frames) -> None:
    req = frames["req"]
    has = req[req["reasoning_tokens"].notna()]
    got = census.reasoning_share().assign(week=lambda d: _week(d["week"]))
    assert got["week"].min() == has["week"].min() > req["week"].min()
    want = (
        has.groupby("week")["reasoning_tokens"].sum()
        / has.groupby("week")["completion_tokens"].sum()
    )
    assert got.set_index("week")["share"].to_dict() == pytest.approx(want.to_dict())
    start = census.field_start("reasoning_tokens")
    assert pd.Timestamp(start["first_week"]).date() == has["week"].min()


def test_length_tool_calls(census, frames) -> None:
    req = frames["req"]
    got = census.length()
    allr = got[got["bucket"] == "All requests"].assign(week=lambda d: _week(d["week"]))
    want = req.groupby("week")["prompt_tokens"].mean()
    assert allr.set_index("week")["mean_prompt_tokens"].to_dict() == pytest.approx(want.to_dict())
    cls = frames["cls"]
    prog = cls[cls["primary_bucket"] == "Programming"]
    want = (prog["weight"] * prog["completion_tokens"]).groupby(prog["week"]).sum() / prog.groupby(
        "week"
    )["weight"].sum()
    pr = got[got["bucket"] == "Programming"].assign(week=lambda d: _week(d["week"]))
    assert pr.set_index("week")["mean_completion_tokens"].to_dict() == pytest.approx(want.to_dict())
    tc = census.tool_calls().assign(week=lambda d: _week(d["week"])).set_index("week")
    tool = req["tool_calls"] > 0
    want_req = tool.groupby(req["week"]).mean()
    want_tok = (
        req["tokens"].where(tool, 0).groupby(req["week"]).sum()
        / req.groupby("week")["tokens"].sum()
    )
    assert tc["request_share"].to_dict() == pytest.approx(want_req.to_dict())
    assert tc["token_share"].to_dict() == pytest.approx(want_tok.to_dict())


def test_price_usage_and_elasticity(census, frames) -> None:
    pu = census.price_usage()
    allr = pu[pu["scope"] == "All requests"].set_index("model")
    req = frames["req"]
    assert allr["tokens"].to_dict() == pytest.approx(req.groupby("model")["tokens"].sum().to_dict())
    priced = req[req["cost_usd"].notna()]
    eff = 1e6 * priced.groupby("model")["cost_usd"].sum() / priced.groupby("model")["tokens"].sum()
    for m, p in eff.items():
        if p > 0:
            assert allr.loc[m, "price_per_mtok"] == pytest.approx(p)
    el = census.price_elasticity().set_index("scope")
    g = allr[(allr["price_per_mtok"] > 0)]
    slope, _ = np.polyfit(np.log(g["price_per_mtok"]), np.log(g["tokens"]), 1)
    assert el.loc["All requests", "elasticity"] == pytest.approx(slope)
    assert el.loc["All requests", "se"] > 0


def test_cohort_retention(census, frames) -> None:
    req = frames["req"]
    model = req["model"].value_counts().index[0]
    act = req[req["model"] == model][["user_key", "week"]].drop_duplicates()
    first = act.groupby("user_key")["week"].min().rename("cohort")
    act = act.join(first, on="user_key")
    act["k"] = (pd.to_datetime(act["week"]) - pd.to_datetime(act["cohort"])).dt.days // 7
    size = first.value_counts()
    got = census.cohort_retention()
    got = got[got["model"] == model].assign(cohort=lambda d: _week(d["cohort"]))
    for (cohort, k), n in act.groupby(["cohort", "k"]).size().items():
        row = got[(got["cohort"] == cohort) & (got["k"] == k)]
        if k <= 12:
            assert len(row) == 1
            assert row["retention"].iloc[0] == pytest.approx(n / size[cohort])
    assert (got[got["k"] == 0]["retention"] == 1.0).all()


# -- small groups ---------------------------------------------------------------------
def test_suppression_rule_and_complement() -> None:
    df = pd.DataFrame(
        {
            "g": ["a", "a", "a", "b", "b"],
            "cat": ["x", "y", "z", "x", "y"],
            "requests": [100, 3, 40, 50, 60],
            "users": [30, 2, 20, 9, 30],
            "share": [0.6, 0.1, 0.3, 0.5, 0.5],
        }
    )
    out = suppress(df, 10, ["share"], ["g"])
    # a/y is small (primary), a/z blanked too so it cannot be recovered by subtraction.
    assert out["suppressed"].tolist() == [False, True, True, True, True]
    assert out["share"].isna().tolist() == out["suppressed"].tolist()
    out = suppress(df, 10, ["share"], None, use_users=False)
    assert out["suppressed"].tolist() == [False, True, False, False, False]


def test_suppression_applied_to_group_analyses(run_out: Path) -> None:
    k = 25
    c = analyse.open(run_out, min_group=k)
    for name in ("weekly_bucket_share", "author_share", "subtags", "author_mix", "price_usage"):
        df = getattr(c, name)()
        assert "suppressed" in df
        small = (df["requests"] < k) | (df["users"] < k)
        assert df.loc[small, "suppressed"].all(), name
        value = "share" if "share" in df else "tokens"
        assert df.loc[df["suppressed"], value].isna().all()
        assert df.loc[~df["suppressed"], value].notna().all()
    ws = c.weekly_bucket_share()
    for _, g in ws.groupby(["segment", "week"]):
        if g["suppressed"].any() and not g["suppressed"].all():
            assert g["suppressed"].sum() >= 2 and g.loc[g["suppressed"], "requests"].sum() >= k
    cr = c.cohort_retention()
    assert cr.loc[cr["cohort_users"] < k, "suppressed"].all()
    c.close()


# -- classifier error -------------------------------------------------------------------
def test_acc_recovers_known_truth() -> None:
    buckets = ["Programming", "Roleplay", "Other", "Translation"]
    truth = np.array([0.5, 0.3, 0.15, 0.05])
    rates = np.array(
        [
            [0.80, 0.05, 0.15, 0.00],
            [0.05, 0.70, 0.25, 0.00],
            [0.10, 0.10, 0.75, 0.05],
            [0.00, 0.00, 0.20, 0.80],
        ]
    )
    observed = pd.Series(rates.T @ truth, index=buckets)
    df = estimate.adjusted_shares(observed, rates, buckets).set_index("bucket")
    assert df.loc[buckets, "adjusted_share"].to_numpy() == pytest.approx(truth, abs=1e-6)
    assert not np.allclose(df.loc[buckets, "raw_share"], truth)
    # Synthetic classify-and-count on a sample: drawn labels, then the adjustment.
    rng = np.random.default_rng(3)
    true_lab = rng.choice(4, size=40_000, p=truth)
    pred = np.array([rng.choice(4, p=rates[t]) for t in true_lab[:8000]])
    counts = pd.Series(np.bincount(pred, minlength=4), index=buckets)
    conf_counts = {"buckets": buckets, "matrix": (rates * 500).round().astype(int).tolist()}
    df = estimate.adjusted_shares(counts, conf_counts, reps=100, seed=0).set_index("bucket")
    assert df.loc[buckets, "adjusted_share"].to_numpy() == pytest.approx(truth, abs=0.03)
    assert (df["adjusted_lo"] <= df["adjusted_share"] + 1e-9).all()
    assert (df["adjusted_hi"] >= df["adjusted_share"] - 1e-9).all()
    # An infeasible observation still gives shares on the simplex.
    p = estimate.adjust_shares(np.array([0.0, 0.0, 0.0, 1.0]), rates)
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0)


def test_adjusted_bucket_share_on_store(census) -> None:
    assert census.adjusted_bucket_share().empty or census.confusion is not None
    raw = census.bucket_share().set_index("primary_bucket")
    buckets = raw.index.tolist()
    df = census.adjusted_bucket_share(pd.DataFrame(np.eye(len(buckets)), buckets, buckets), reps=20)
    df = df.set_index("bucket")
    assert df.loc[buckets, "adjusted_share"].to_numpy() == pytest.approx(
        raw["share"].to_numpy(), abs=1e-6
    )
    assert df.loc[buckets, "raw_share"].to_numpy() == pytest.approx(raw["share"].to_numpy())


# -- fields that start later, languages, export ---------------------------------------------
def _late_fields_log(path: Path) -> Path:
    """A log whose language and tool-call fields exist only from the third week."""
    start = datetime(2025, 3, 3, tzinfo=UTC)
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(600):
            when = start + timedelta(hours=int(i * 0.9))
            late = when >= start + timedelta(weeks=2)
            d = {
                "id": f"gen-{i}",
                "created_at": when.isoformat().replace("+00:00", "Z"),
                "model": "openai/gpt-4o-mini",
                "tokens_prompt": int(rng.integers(10, 500)),
                "tokens_completion": int(rng.integers(10, 300)),
                "external_user": f"u{i % 40}",
            }
            if late:
                d["language"] = ["en", "de", "fr"][i % 3]
                d["tool_calls"] = int(i % 4 == 0)
            f.write(
                json.dumps(
                    {
                        "data": d,
                        "input": {
                            "messages": [{"role": "user", "content": "write a python function"}]
                        },
                    }
                )
                + "\n"
            )
    return path


def test_late_fields_and_language(tmp_path: Path) -> None:
    log = _late_fields_log(tmp_path / "log.jsonl")
    out = tmp_path / "out"
    pipeline.run([log], pipeline.RunOptions(out=out, rate=1.0, classifier="keyword", report=False))
    c = analyse.open(out, min_group=5)
    lm = c.language_mix()
    start = c.field_start("language")
    assert pd.Timestamp(start["first_week"]) > pd.Timestamp(start["data_first_week"])
    assert pd.to_datetime(lm["week"]).min() == pd.Timestamp(start["first_week"])
    assert set(lm["language"]) == {"en", "de", "fr"}
    assert np.allclose(lm.groupby("week")["share"].sum(), 1.0)
    tc = c.tool_calls()
    assert pd.to_datetime(tc["week"]).min() == pd.Timestamp(
        c.field_start("tool_calls")["first_week"]
    )
    written = c.export_tables()
    for name in analyse.Census.ANALYSES:
        assert written[name].exists()
        assert (out / "tables" / f"{name}.parquet").exists()
    c.close()


def test_shipped_model_matrix_and_metrics(run_out: Path, tmp_path: Path, monkeypatch) -> None:
    """The shipped model's meta.json supplies metrics and the confusion matrix, but only for
    stores classified by exactly that model."""
    from tokencensus import report

    buckets = ["Programming", "Roleplay", "Others"]
    (tmp_path / "model").mkdir()
    meta = {
        "model_id": "m-test",
        "metrics": {
            "test": {"primary_accuracy": 0.77, "macro_f1": 0.7, "per_bucket": {}},
            "test_confusion": {"buckets": buckets, "matrix": [[8, 1, 1], [1, 8, 1], [1, 1, 8]]},
        },
    }
    (tmp_path / "model" / "meta.json").write_text(json.dumps(meta))
    monkeypatch.setattr(analyse, "DATA_DIR", tmp_path)
    c = analyse.open(run_out, min_group=1)
    stored = c.meta()
    monkeypatch.setattr(c, "meta", lambda: {**stored, "classifier": "m-test"})
    conf, source = c.find_confusion()
    assert conf == meta["metrics"]["test_confusion"] and "meta.json" in source
    adj = c.adjusted_bucket_share(reps=10)
    assert len(adj) and adj["adjusted_share"].sum() == pytest.approx(1.0)
    html = report.write_report(c, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "0.77" in html and "adjusted for classifier error" in html
    monkeypatch.setattr(c, "meta", lambda: {**stored, "classifier": "m-test+minilm"})
    assert c.find_confusion() == (None, None)
    html = report.write_report(c, tmp_path / "r2.html").read_text(encoding="utf-8")
    assert "No confusion matrix is available" in html
    c.close()
