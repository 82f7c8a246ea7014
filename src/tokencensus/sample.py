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
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"sampling rate must be in (0, 1], got {rate}")
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
