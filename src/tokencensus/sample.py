"""Deterministic sampling keyed on a hash of the request id.

A request is kept iff ``u(request_id, salt) < rate`` where ``u`` is the first
52 bits of ``md5(salt || 0x1F || request_id)`` divided by 2**52. The same
number is computed in DuckDB SQL (:data:`SQL_U`), in Python
(:func:`u_value`) and so in Ray (which runs :func:`sample_batch`), so reruns
and other engines keep exactly the same ids.
"""

from __future__ import annotations

import hashlib

import duckdb
import pyarrow as pa

SEP = "\x1f"
_SCALE = float(2**52)

#: DuckDB expression for u in [0, 1); ``{salt}`` is a bound parameter ``$salt``.
SQL_U = (
    "(('0x' || substr(md5($salt || chr(31) || request_id), 1, 13))::UBIGINT / 4503599627370496.0)"
)


def u_value(request_id: str, salt: str) -> float:
    """The sampling hash in Python: the reference every engine must agree with."""
    digest = hashlib.md5((salt + SEP + request_id).encode("utf-8")).hexdigest()
    return int(digest[:13], 16) / _SCALE


def keep(request_id: str, rate: float, salt: str) -> bool:
    """Whether ``request_id`` is in the sample at ``rate``."""
    return u_value(request_id, salt) < rate


def check_rate(rate: float, what: str = "sampling rate") -> None:
    if not 0.0 < float(rate) <= 1.0:
        raise ValueError(f"{what} must be in (0, 1], got {rate}")


def parse_model_rates(specs: list[str] | None) -> dict[str, float] | None:
    """``["openai/gpt-4o=0.01", "x/y=1"]`` (the repeatable ``--model-rate MODEL=RATE``
    option) -> ``{"openai/gpt-4o": 0.01, "x/y": 1.0}``; ``None`` when none are given.

    The split is on the last ``=``, so model ids may contain ``=``."""
    if not specs:
        return None
    rates: dict[str, float] = {}
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            model, sep, value = part.rpartition("=")
            if not sep or not model.strip():
                raise ValueError(f"--model-rate {part!r}: expected MODEL=RATE")
            try:
                r = float(value)
            except ValueError:
                raise ValueError(f"--model-rate {part!r}: {value!r} is not a number") from None
            check_rate(r, f"--model-rate for {model.strip()!r}")
            rates[model.strip()] = r
    return rates


def sample_batch(
    batch: pa.RecordBatch | pa.Table,
    rate: float,
    salt: str,
    model_rates: dict[str, float] | None = None,
) -> pa.Table:
    """Add ``sampled`` (bool) and ``weight`` (1/rate where sampled) to ``batch``.

    ``model_rates`` stratifies by model: a model listed there is sampled at its
    own rate, the rest at ``rate``. Weights are the inverse inclusion
    probabilities (Horvitz-Thompson), so estimators stay unbiased.
    """
    check_rate(rate)
    for m, r in (model_rates or {}).items():
        check_rate(r, f"sampling rate for model {m!r}")
    con = duckdb.connect()
    con.register(
        "b", pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    )
    if model_rates:
        strata = pa.table({"m": list(model_rates), "r": [float(v) for v in model_rates.values()]})
        con.register("strata", strata)
        rate_expr = "coalesce((SELECT r FROM strata WHERE m = b.model), $rate)"
    else:
        rate_expr = "$rate"
    out = con.sql(
        f"""
        SELECT b.*, {SQL_U} < {rate_expr} AS sampled,
               CASE WHEN {SQL_U} < {rate_expr} THEN 1.0 / {rate_expr} ELSE 0.0 END AS weight
        FROM b
        """,
        params={"salt": salt, "rate": rate},
    ).to_arrow_table()
    con.close()
    return out
