"""Privacy: keyed hashes for user ids, and the secret key kept outside the outputs.

User and customer ids become HMAC-SHA256 under a secret key, so the same user
links across runs without the id ever being stored. The key is given by the
user (``--key-file`` or ``TOKENCENSUS_HMAC_KEY``) or generated once into
``~/.config/tokencensus/hmac.key``, never into the output folder.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

KEY_ENV = "TOKENCENSUS_HMAC_KEY"


def default_key_path() -> Path:
    """Where a generated key lives: the user's config folder, outside every output."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tokencensus" / "hmac.key"


def load_key(key_file: Path | None = None) -> bytes:
    """The HMAC key: from ``key_file``, the environment, or generated once (mode 600)."""
    if key_file is not None:
        data = Path(key_file).read_bytes().strip()
        if len(data) < 16:
            raise ValueError(f"{key_file}: key too short (need at least 16 bytes)")
        return data
    if os.environ.get(KEY_ENV):
        return os.environ[KEY_ENV].encode("utf-8")
    path = default_key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def hash_user(user: str | None, key: bytes) -> str | None:
    """HMAC-SHA256 of a user id, hex, truncated to 32 characters (128 bits)."""
    if user is None or user == "":
        return None
    return hmac.new(key, user.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def hash_users_batch(batch: pa.RecordBatch | pa.Table, key: bytes) -> pa.Table:
    """Replace ``user_key`` with its keyed hash (Arrow in, Arrow out)."""
    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    i = table.schema.get_field_index("user_key")
    users = table.column(i).to_pylist()
    cache: dict[str, str | None] = {}
    hashed = []
    for u in users:
        if u not in cache:
            cache[u] = hash_user(u, key)
        hashed.append(cache[u])
    return table.set_column(i, "user_key", pa.array(hashed, pa.string()))


WITHHELD = "<message withheld: it quoted a prompt or a user id>"


def echoes(message: str, values: Iterable[str | None], window: int = 12) -> bool:
    """Whether ``message`` quotes any of ``values`` (a prompt, a user id): the whole
    value when short, else any ``window``-character piece of it (whitespace and case
    folded). Used to keep private text out of stored errors and exception messages."""
    low = " ".join(str(message).split()).lower()
    if not low:
        return False
    for value in values:
        t = " ".join((value or "").split()).lower()
        if not t:
            continue
        if len(t) <= window:
            if len(t) >= 4 and t in low:
                return True
            continue
        for i in range(0, len(t) - window + 1, window // 2):
            if t[i : i + window] in low:
                return True
    return False


def scrub(message: str, values: Iterable[str | None], limit: int = 300) -> str:
    """``message`` cut to ``limit`` characters, or :data:`WITHHELD` if it echoes ``values``."""
    return WITHHELD if echoes(message, values) else str(message)[:limit]
