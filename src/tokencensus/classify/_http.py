"""Shared HTTP plumbing of the remote backends: rate limit, retries, concurrency.

The Google and OpenAI-compatible backends both send JSON over HTTPS to a
service that answers 429 and 5xx under load. This module holds what they
share so that neither duplicates it:

* :class:`TokenBucket` keeps requests within a queries-per-second budget;
* :func:`send` posts one request, retrying 429, 5xx, timeouts and transport
  faults with exponential backoff plus full jitter, honouring ``Retry-After``;
* :func:`map_concurrent` runs a function over items on a thread pool, keeping
  order and turning every exception into a value so nothing is lost;
* :func:`fingerprint` and :func:`scrub` keep prompt text out of logs and
  error strings (only hashes and lengths are ever shown).
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

log = logging.getLogger("tokencensus.classify.http")

T = TypeVar("T")
R = TypeVar("R")

#: Statuses worth another try: rate limited, or a server-side fault.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class TokenBucket:
    """A thread-safe token bucket: at most ``qps`` acquisitions a second on average.

    ``burst`` tokens may be spent at once after an idle spell. ``qps <= 0``
    disables the limit.
    """

    def __init__(self, qps: float, burst: float | None = None) -> None:
        self.qps = float(qps)
        self.capacity = float(burst if burst is not None else max(1.0, self.qps))
        self._tokens = self.capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, tokens: float = 1.0) -> float:
        """Block until ``tokens`` are available; returns the seconds waited."""
        if self.qps <= 0:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.qps)
                self._last = now
                if self._tokens >= tokens:
                    self._tokens -= tokens
                    return waited
                need = (tokens - self._tokens) / self.qps
            time.sleep(need)
            waited += need


@dataclass
class RetryPolicy:
    """How often and how long to back off before giving up on one request."""

    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 32.0
    #: Cap on a server's ``Retry-After``; longer asks are clipped to this.
    retry_after_max: float = 120.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based).

        Full jitter (a uniform draw up to the exponential ceiling), but never
        less than what the server asked for in ``Retry-After``.
        """
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        wait = random.uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry_after_max))
        return wait


class RequestFailed(Exception):
    """A request that did not succeed after its retries.

    ``reason`` is a short machine-readable word (``http_500``, ``timeout``,
    ``transport``); the message never holds request or response bodies.
    """

    def __init__(self, reason: str, status: int | None = None, attempts: int = 1) -> None:
        self.reason = reason
        self.status = status
        self.attempts = attempts
        super().__init__(f"{reason} after {attempts} attempt(s)")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class Sender:
    """One backend's HTTP client, rate limit and retry policy together."""

    client: httpx.Client
    bucket: TokenBucket
    policy: RetryPolicy
    sleep: Callable[[float], None] = time.sleep

    def send(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        params: Mapping[str, str] | None = None,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
        on_status: Callable[[httpx.Response], bool] | None = None,
    ) -> httpx.Response:
        """Send one request, retrying transient failures; return the last response.

        A response whose status is not retryable (2xx, or 4xx other than 408
        and 429) is returned to the caller to interpret. ``on_status`` may
        look at a response first and return ``True`` to ask for one more try
        (e.g. a 401 after refreshing a token). ``headers`` may be a function,
        called before each attempt (so a refreshed token is used). Raises :class:`RequestFailed`
        when the retries run out.
        """
        attempt = 0
        while True:
            self.bucket.acquire()
            try:
                hdrs = headers() if callable(headers) else headers
                resp = self.client.request(
                    method, url, json=json, data=data, headers=hdrs, params=params
                )
            except httpx.TimeoutException:
                reason, status, retry_after = "timeout", None, None
            except httpx.TransportError as exc:
                reason, status, retry_after = f"transport:{type(exc).__name__}", None, None
            else:
                if on_status is not None and on_status(resp) and attempt < self.policy.max_retries:
                    attempt += 1
                    continue
                if resp.status_code not in retry_statuses:
                    return resp
                reason, status = f"http_{resp.status_code}", resp.status_code
                retry_after = parse_retry_after(resp.headers.get("retry-after"))
            if attempt >= self.policy.max_retries:
                raise RequestFailed(reason, status=status, attempts=attempt + 1)
            wait = self.policy.delay(attempt, retry_after)
            log.info("retrying %s %s (%s) in %.2fs", method, _no_query(url), reason, wait)
            self.sleep(wait)
            attempt += 1


def _no_query(url: str) -> str:
    """The URL without its query string (which may hold an API key)."""
    return url.split("?", 1)[0]


def map_concurrent(
    fn: Callable[[T], R], items: Sequence[T], concurrency: int
) -> list[R | BaseException]:
    """``fn`` over ``items`` on up to ``concurrency`` threads, in order.

    An exception raised for one item is returned in its place, so one bad
    request never loses the others.
    """

    def safe(item: T) -> R | BaseException:
        try:
            return fn(item)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a value
            return exc

    if not items:
        return []
    if concurrency <= 1 or len(items) == 1:
        return [safe(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items))) as pool:
        return list(pool.map(safe, items))


def fingerprint(text: str) -> str:
    """What a log line may say of a text: a short hash and its length, never the text."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"sha256:{digest} len={len(text)}"


def scrub(message: str, texts: Iterable[str], *, limit: int = 200) -> str:
    """``message`` cut to ``limit`` characters, withheld if it echoes any of ``texts``.

    Servers sometimes quote the input in their error messages; such a
    message is replaced rather than passed on, so no prompt text reaches
    an error string or a log.
    """
    message = " ".join(str(message).split())[:limit]
    low = message.lower()
    for text in texts:
        t = " ".join((text or "").split()).lower()
        if not t:
            continue
        if len(t) <= 12:
            if t in low:
                return "<server message withheld: it quoted the input>"
            continue
        for i in range(0, len(t) - 12 + 1, 6):
            if t[i : i + 12] in low:
                return "<server message withheld: it quoted the input>"
    return message


def error_reason(exc: BaseException) -> str:
    """A short error string for a :class:`Prediction`, free of any text."""
    if isinstance(exc, RequestFailed):
        return str(exc)
    return f"{type(exc).__name__}"


def env_or(value: T | None, name: str, default: T, cast: Callable[[str], T] = str) -> T:  # type: ignore[assignment]
    """``value`` if given, else the environment variable ``name`` cast, else ``default``.

    Lets ``tokencensus classify --backend NAME`` (which passes only the
    threshold) be configured through ``TOKENCENSUS_*`` variables.
    """
    if value is not None:
        return value
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return cast(raw)


def env_flag(raw: str) -> bool:
    """``"1"``, ``"true"``, ``"yes"``, ``"on"`` -> True."""
    return raw.strip().lower() in ("1", "true", "yes", "on")


def rebuild(cls: type[T], kwargs: dict[str, Any]) -> T:
    """Unpickle helper: a backend is rebuilt from its settings (clients and locks are fresh)."""
    return cls(**kwargs)
