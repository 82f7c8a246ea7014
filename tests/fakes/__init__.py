"""Local fake HTTP servers for the remote classifier backends (127.0.0.1 only)."""

import os

from .servers import (
    RULES,
    FakeState,
    Recorded,
    start_google_server,
    start_openai_server,
    test_key,
    write_authorized_user,
    write_service_account,
)

#: Backend options that make retries instant in tests.
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "qps": 0}

AMBIENT = ("GOOGLE_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS", "OPENAI_API_KEY", "OPENAI_BASE_URL")


def clear_ambient_credentials(monkeypatch, tmp_path) -> None:
    """Hide any real credentials or backend settings of the machine from a test."""
    for var in list(os.environ):
        if var in AMBIENT or var.startswith(("TOKENCENSUS_GOOGLE_", "TOKENCENSUS_OPENAI_")):
            monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("TOKENCENSUS_REDACT", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))


__all__ = [
    "FAST",
    "clear_ambient_credentials",
    "RULES",
    "FakeState",
    "Recorded",
    "start_google_server",
    "start_openai_server",
    "test_key",
    "write_authorized_user",
    "write_service_account",
]
