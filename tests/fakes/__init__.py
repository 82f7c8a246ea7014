"""Local fake HTTP servers for the remote classifier backends (127.0.0.1 only)."""

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

__all__ = [
    "RULES",
    "FakeState",
    "Recorded",
    "start_google_server",
    "start_openai_server",
    "test_key",
    "write_authorized_user",
    "write_service_account",
]
