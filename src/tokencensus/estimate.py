"""Error-bar math: the bootstrap for weighted token shares, and the ACC/PACC adjustment.

Sampling error
    :func:`bootstrap_share` resamples the sampled requests with replacement (a
    deterministic seed) and recomputes the weighted ratio estimator in every
    replicate; the 2.5% and 97.5% percentiles are the interval. It should agree
    with the linearised interval of :mod:`tokencensus.analyse` (tests check it).

Classifier error
    A classifier that confuses buckets biases classify-and-count. With the
    confusion matrix ``C[i, j] = P(predicted = j | true = i)`` measured on held-out
    labelled prompts, the observed predicted shares are ``q = C^T p`` for the true
    shares ``p``. :func:`adjust_shares` solves that for ``p`` by least squares
    constrained to the simplex (non-negative, summing to one): adjusted
    classify-and-count (ACC) with hard labels, or probabilistic ACC (PACC) when
    ``C`` and ``q`` are averages of predicted probabilities instead of counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import nnls

Z95 = 1.959963984540054


# -- sampling error: bootstrap ---------------------------------------------------------------
def bootstrap_replicates(
    rows: pd.DataFrame, cat: str, reps: int = 1000, seed: int | np.random.Generator = 0
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(categories, point estimate, reps x categories replicate shares) for one group.

    ``rows`` holds one sampled request per row with ``t`` (tokens), ``w`` (weight) and
    ``cat``. Each replicate draws ``n`` requests with replacement (multinomial counts).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n = len(rows)
    cats, codes = np.unique(rows[cat].astype(str).to_numpy(), return_inverse=True)
    wt = rows["w"].to_numpy(float) * rows["t"].to_numpy(float)
    onehot = np.zeros((n, len(cats)))
    onehot[np.arange(n), codes] = wt
    est = onehot.sum(0) / wt.sum() if wt.sum() > 0 else np.full(len(cats), np.nan)
    shares = []
    chunk = max(1, min(reps, 2_000_000 // max(n, 1)))
    done = 0
    while done < reps:
        b = min(chunk, reps - done)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(float)
        den = counts @ wt
        shares.append((counts @ onehot) / np.where(den > 0, den, np.nan)[:, None])
        done += b
    sims = np.vstack(shares) if shares else np.empty((0, len(cats)))
    return cats.tolist(), est, sims


def bootstrap_share(
    rows: pd.DataFrame,
    cat: str,
    group: Sequence[str] = (),
    reps: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    fpc: float = 1.0,
) -> pd.DataFrame:
    """Bootstrap interval for the weighted token share of each ``cat`` within each ``group``.

    ``rows`` holds one sampled request per row with columns ``t`` (tokens), ``w``
    (sampling weight), ``cat`` and the ``group`` columns. Requests are resampled
    with replacement within each group (seed ``seed``: deterministic). The
    replicates' spread around the estimate is scaled by ``sqrt(fpc)`` (the
    finite-population correction ``1 - sampling rate``, as in the linearised
    variance); the interval is the percentile interval of the scaled replicates.
    Returns group, cat, share, se, lo, hi, reps.
    """
    group = list(group)
    alpha = (1 - level) / 2
    out = []
    rng = np.random.default_rng(seed)
    groups = rows.groupby(group, dropna=False, sort=True) if group else [((), rows)]
    scale = float(np.sqrt(max(fpc, 0.0)))
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        if not len(g):
            continue
        names, est, sims = bootstrap_replicates(g, cat, reps, rng)
        sims = est + scale * (sims - est)
        lo = np.clip(np.nanquantile(sims, alpha, axis=0), 0, 1)
        hi = np.clip(np.nanquantile(sims, 1 - alpha, axis=0), 0, 1)
        se = np.nanstd(sims, axis=0, ddof=1)
        for j, c in enumerate(names):
            out.append(
                {
                    **dict(zip(group, key, strict=True)),
                    cat: c,
                    "share": est[j],
                    "se": se[j],
                    "lo": lo[j],
                    "hi": hi[j],
                    "reps": reps,
                }
            )
    return pd.DataFrame(out, columns=[*group, cat, "share", "se", "lo", "hi", "reps"])


# -- classifier error: ACC / PACC ------------------------------------------------------------
def confusion_frame(
    confusion: pd.DataFrame | np.ndarray | dict | Sequence[Sequence[float]],
    buckets: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.Series | None]:
    """Normalise a confusion matrix to row-stochastic ``P(pred = j | true = i)``.

    Accepts a DataFrame (index true, columns predicted), an array with ``buckets``,
    or the ``{"buckets": [...], "matrix": [[...]]}`` dict that
    :func:`tokencensus.evaluate.confusion` returns. Counts are normalised per row;
    the row totals are returned as well (``None`` when the input held rates), so
    the matrix's own sampling error can be resampled.
    """
    if isinstance(confusion, dict):
        buckets = confusion.get("buckets", buckets)
        confusion = confusion.get("matrix", confusion.get("rates"))
    if isinstance(confusion, pd.DataFrame):
        df = confusion.astype(float).copy()
        df.index = df.index.astype(str)
        df.columns = df.columns.astype(str)
    else:
        arr = np.asarray(confusion, dtype=float)
        if buckets is None:
            raise ValueError("a confusion array needs its bucket names")
        if arr.shape != (len(buckets), len(buckets)):
            raise ValueError(
                f"confusion matrix shape {arr.shape} does not fit {len(buckets)} buckets"
            )
        df = pd.DataFrame(arr, index=list(buckets), columns=list(buckets))
    labels = list(dict.fromkeys([*df.index, *df.columns]))
    df = df.reindex(index=labels, columns=labels, fill_value=0.0)
    if (df.to_numpy() < 0).any():
        raise ValueError("a confusion matrix cannot hold negative entries")
    totals = df.sum(axis=1)
    is_counts = bool((df.to_numpy() > 1.0 + 1e-9).any()) or not np.allclose(
        totals[totals > 0], 1.0, atol=1e-6
    )
    rates = df.div(totals.where(totals > 0, 1.0), axis=0)
    # A true bucket never seen in evaluation: assume it is recognised (identity row).
    for b in totals.index[totals <= 0]:
        rates.loc[b, b] = 1.0
    return rates, (totals if is_counts else None)


def adjust_shares(observed: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Solve ``rates^T p ~ observed`` for ``p`` on the simplex (ACC/PACC).

    Least squares with ``p >= 0`` (NNLS) and ``sum(p) = 1`` imposed as a heavily
    weighted extra equation, then renormalised. ``rates[i, j] = P(pred j | true i)``.
    """
    q = np.asarray(observed, float)
    a = np.asarray(rates, float).T
    k = a.shape[1]
    lam = 1e3 * max(1.0, np.abs(a).max())
    aa = np.vstack([a, np.full((1, k), lam)])
    bb = np.concatenate([q / max(q.sum(), 1e-300), [lam]])
    p, _ = nnls(aa, bb, maxiter=50 * k)
    s = p.sum()
    return p / s if s > 0 else np.full(k, 1.0 / k)


def adjusted_shares(
    observed: pd.Series,
    confusion: pd.DataFrame | np.ndarray | dict,
    buckets: Sequence[str] | None = None,
    reps: int = 0,
    seed: int = 0,
    replicates: np.ndarray | None = None,
) -> pd.DataFrame:
    """Raw and ACC-adjusted shares per bucket, with an optional bootstrap interval.

    ``observed`` maps predicted bucket -> share (or weighted tokens). Buckets the
    matrix does not know are kept unadjusted (identity rows). When ``reps`` > 0 the
    interval resamples the confusion matrix's rows (multinomial, when it was
    given as counts) and, if ``replicates`` (reps x buckets observed shares in
    ``observed``'s order, e.g. a sampling bootstrap) is passed, the observed shares too.
    """
    rates, totals = confusion_frame(confusion, buckets)
    labels = list(dict.fromkeys([*rates.index, *observed.index.astype(str)]))
    rates = rates.reindex(index=labels, columns=labels, fill_value=0.0)
    for b in labels:
        if rates.loc[b].sum() <= 0:
            rates.loc[b, b] = 1.0
    q = observed.astype(float).reindex(labels, fill_value=0.0).to_numpy()
    q = q / q.sum() if q.sum() > 0 else q
    p = adjust_shares(q, rates.to_numpy())
    out = pd.DataFrame({"bucket": labels, "raw_share": q, "adjusted_share": p})
    out["in_confusion"] = [b in set(rates.index[rates.sum(axis=1) > 0]) for b in labels]
    if reps > 0:
        rng = np.random.default_rng(seed)
        r = rates.to_numpy()
        sims = np.empty((reps, len(labels)))
        rep_q = None
        if replicates is not None:
            rep_q = pd.DataFrame(replicates, columns=observed.index.astype(str))
            rep_q = rep_q.reindex(columns=labels, fill_value=0.0).to_numpy()
        for b in range(reps):
            rb = r
            if totals is not None:
                tot = totals.reindex(labels, fill_value=0).to_numpy()
                rb = np.array(
                    [
                        rng.multinomial(int(n), row) / n if n > 0 else row
                        for n, row in zip(tot, r, strict=True)
                    ]
                )
            qb = rep_q[b % len(rep_q)] if rep_q is not None else q
            sims[b] = adjust_shares(qb, rb)
        out["adjusted_lo"] = np.quantile(sims, 0.025, axis=0)
        out["adjusted_hi"] = np.quantile(sims, 0.975, axis=0)
    return out.sort_values("adjusted_share", ascending=False, ignore_index=True)


def ols_loglog(x: np.ndarray, y: np.ndarray) -> dict:
    """Slope of log(y) on log(x) with its standard error (positive values only)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    lx, ly = np.log(x[ok]), np.log(y[ok])
    n = len(lx)
    if n < 3 or np.ptp(lx) == 0:
        return {"n": n, "slope": np.nan, "se": np.nan, "intercept": np.nan}
    sxx = ((lx - lx.mean()) ** 2).sum()
    slope = ((lx - lx.mean()) * (ly - ly.mean())).sum() / sxx
    intercept = ly.mean() - slope * lx.mean()
    resid = ly - intercept - slope * lx
    se = np.sqrt((resid**2).sum() / (n - 2) / sxx)
    return {"n": n, "slope": slope, "se": se, "intercept": intercept}
