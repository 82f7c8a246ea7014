"""Google Cloud Natural Language ``documents:classifyText`` backend.

Sends each text (its first 1,000 characters) to the REST endpoint

* ``POST {base_url}/v1/documents:classifyText`` with
  ``classificationModelOptions`` ``{"v1Model": {}}`` (V1 categories) or
  ``{"v2Model": {"contentCategoriesVersion": "V1" | "V2"}}``, or
* ``POST {base_url}/v2/documents:classifyText`` (V2 categories; no model options),

and turns ``{"categories": [{"name", "confidence"}], ...}`` into a
:class:`~tokencensus.classify.Prediction`.

Auth, in this order: an API key (``api_key=`` or ``GOOGLE_API_KEY``), sent as
the ``x-goog-api-key`` header (or the ``key=`` query parameter with
``key_in_query=True``); else application default credentials: the JSON file
named by ``credentials_file=`` / ``GOOGLE_APPLICATION_CREDENTIALS`` / gcloud's
well-known file, either a service account (a signed JWT exchanged at its
``token_uri``, RFC 7523) or an ``authorized_user`` refresh token. The JWT is
signed with ``cryptography`` when installed, else with a small pure-Python
RSASSA-PKCS1-v1_5 signer (same output; not constant-time, which matters
only against an attacker who can time this process).

Texts Google cannot classify are kept, with the reason in ``error``:
``too_short: ...`` (Google needs at least 20 tokens; checked locally first,
so no unit is spent) and ``unsupported_language:xx``. 429 and 5xx are
retried with backoff within ``qps``; requests run on ``concurrency`` threads.

:func:`estimate_cost` prices a run before anything is sent (``--dry-run``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from tokencensus import taxonomy
from tokencensus.classify import Classifier, Prediction, prompt_window
from tokencensus.classify._http import (
    RequestFailed,
    RetryPolicy,
    Sender,
    TokenBucket,
    env_flag,
    env_or,
    error_reason,
    map_concurrent,
    rebuild,
    scrub,
)
from tokencensus.classify.redact import Redactor, make_redactor, picklable_redact

log = logging.getLogger("tokencensus.classify.google")

DEFAULT_BASE_URL = "https://language.googleapis.com"
SCOPES = (
    "https://www.googleapis.com/auth/cloud-language",
    "https://www.googleapis.com/auth/cloud-platform",
)
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"

#: Google's minimum: classifyText rejects documents of fewer tokens.
MIN_TOKENS = 20

#: Characters per billing unit; each request is rounded up to whole units.
UNIT_CHARS = 1000

#: Content Classification prices, USD per unit (1,000 characters), by monthly
#: volume tier: (units from, units to or None, price per unit).
#: Source: https://cloud.google.com/natural-language/pricing ("Content
#: Classification": first 30,000 units/month free; 30,001-250,000 $0.0020;
#: 250,001-5,000,000 $0.0005; over 5,000,000 $0.0001 per unit), read 2026-11-25.
#: The v1 and v2 endpoints are billed alike for classification.
PRICE_TIERS: tuple[tuple[int, int | None, float], ...] = (
    (0, 30_000, 0.0),
    (30_000, 250_000, 0.0020),
    (250_000, 5_000_000, 0.0005),
    (5_000_000, None, 0.0001),
)
PRICE_SOURCE = (
    "https://cloud.google.com/natural-language/pricing (Content Classification), 2026-11-25"
)

# A rough tokenizer like Google's: words, numbers, each punctuation mark,
# and each CJK / kana / hangul character as its own token.
_TOKEN_RX = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W_]+|[^\w\s]|_"
)
_LANG_RX = re.compile(
    r"language\s+['\"]?([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)?)['\"]?\s+is not supported"
)


class GoogleAuthError(RuntimeError):
    """No usable credentials, or the token exchange failed (never holds secrets)."""


def count_tokens(text: str) -> int:
    """An estimate of how many tokens Google's tokenizer finds in ``text``."""
    return len(_TOKEN_RX.findall(text or ""))


def units_for(text: str) -> int:
    """Billing units of one request: characters / 1,000 rounded up, at least 1."""
    return max(1, math.ceil(len(text) / UNIT_CHARS))


def price_units(units: int, already_used: int = 0) -> float:
    """USD for ``units`` this month, after ``already_used`` units (the free tier first)."""
    usd = 0.0
    start, end = already_used, already_used + units
    for lo, hi, price in PRICE_TIERS:
        hi_ = end if hi is None else min(hi, end)
        lo_ = max(lo, start)
        if hi_ > lo_:
            usd += (hi_ - lo_) * price
    return usd


def estimate_cost(
    texts: Sequence[str | None],
    *,
    min_tokens: int = MIN_TOKENS,
    already_used: int = 0,
    free_tier: bool = True,
) -> dict[str, Any]:
    """Price classifying ``texts`` with Google before anything is sent.

    Each text is cut to its first 1,000 characters (as the backend does), so
    a request is one unit. Texts that are empty or below ``min_tokens`` are
    not sent and cost nothing. ``already_used`` is this month's units so far
    (the free tier is spent first); ``free_tier=False`` prices every unit at
    the first paid tier.

    Returns ``{"texts", "requests", "skipped_too_short", "units", "usd",
    "usd_per_1000_texts", "free_units", "price_source"}``.
    """
    units = requests = skipped = 0
    for text in texts:
        window = prompt_window(text)
        if not window.strip() or (min_tokens and count_tokens(window) < min_tokens):
            skipped += 1
            continue
        requests += 1
        units += units_for(window)
    if free_tier:
        usd = price_units(units, already_used)
    else:
        usd = units * PRICE_TIERS[1][2]
    n = len(texts)
    return {
        "texts": n,
        "requests": requests,
        "skipped_too_short": skipped,
        "units": units,
        "usd": round(usd, 4),
        "usd_per_1000_texts": round(usd / n * 1000, 4) if n else 0.0,
        "free_units": PRICE_TIERS[0][1] if free_tier else 0,
        "price_source": PRICE_SOURCE,
    }


def describe_estimate(est: dict[str, Any]) -> str:
    """One line for ``--dry-run``: what :func:`estimate_cost` found."""
    line = (
        f"Google classifyText dry run: {est['texts']:,} texts -> {est['requests']:,} requests, "
        f"{est['units']:,} units (1 unit = {UNIT_CHARS:,} characters), "
        f"about ${est['usd']:,.2f}"
    )
    extra = []
    if est.get("skipped_too_short"):
        extra.append(f"{est['skipped_too_short']:,} too short or empty, not sent")
    if est.get("cached"):
        extra.append(f"{est['cached']:,} answered from the cache")
    if est.get("free_units"):
        extra.append(f"after the free {est['free_units']:,} units a month")
    if extra:
        line += " (" + "; ".join(extra) + ")"
    return line + f". Prices: {est['price_source']}."


# --------------------------------------------------------------------------- auth


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _der_read(buf: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER element at ``pos``: (tag, content, next position)."""
    tag = buf[pos]
    length = buf[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(buf[pos : pos + n], "big")
        pos += n
    return tag, buf[pos : pos + length], pos + length


def _der_children(content: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(content):
        tag, value, pos = _der_read(content, pos)
        out.append((tag, value))
    return out


def _rsa_numbers(pem: str) -> tuple[int, int, int, int, int]:
    """(n, d, p, q, e) of a PEM RSA private key, PKCS#8 or PKCS#1."""
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    der = base64.b64decode(body)
    _, seq, _ = _der_read(der, 0)
    kids = _der_children(seq)
    if len(kids) >= 3 and kids[1][0] == 0x30 and kids[2][0] == 0x04:  # PKCS#8 wrapper
        _, seq, _ = _der_read(kids[2][1], 0)
        kids = _der_children(seq)
    ints = [int.from_bytes(v, "big") for t, v in kids if t == 0x02]
    if len(ints) < 6:
        raise GoogleAuthError("service-account private key is not an RSA key")
    _, n, e, d, p, q = ints[:6]
    return n, d, p, q, e


_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def rs256_sign(message: bytes, private_key_pem: str) -> bytes:
    """RSASSA-PKCS1-v1_5 with SHA-256 (JWT ``RS256``) of ``message``."""
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
    except ImportError:
        pass
    else:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
    n, d, p, q, _ = _rsa_numbers(private_key_pem)
    k = (n.bit_length() + 7) // 8
    t = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    m = int.from_bytes(em, "big")
    # CRT for speed: s = m^d mod n.
    dp, dq, qinv = d % (p - 1), d % (q - 1), pow(q, -1, p)
    m1, m2 = pow(m, dp, p), pow(m, dq, q)
    s = m2 + q * ((qinv * (m1 - m2)) % p)
    return s.to_bytes(k, "big")


def make_jwt(claims: dict[str, Any], private_key_pem: str, key_id: str | None = None) -> str:
    """A signed ``RS256`` JWT of ``claims``."""
    header = {"alg": "RS256", "typ": "JWT"}
    if key_id:
        header["kid"] = key_id
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    return signing_input + "." + _b64url(rs256_sign(signing_input.encode(), private_key_pem))


def adc_path(credentials_file: str | os.PathLike[str] | None = None) -> Path | None:
    """The application-default-credentials file to use, if any."""
    if credentials_file:
        return Path(credentials_file)
    env = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if env:
        return Path(env)
    config = os.environ.get("CLOUDSDK_CONFIG") or str(Path.home() / ".config" / "gcloud")
    well_known = Path(config) / "application_default_credentials.json"
    return well_known if well_known.is_file() else None


class AccessToken:
    """OAuth2 access tokens from a credentials file, refreshed before they expire."""

    def __init__(self, path: Path, client: httpx.Client, scopes: Sequence[str] = SCOPES) -> None:
        try:
            info = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GoogleAuthError(
                f"cannot read Google credentials file {str(path)!r}: {type(exc).__name__}"
            ) from None
        self.kind = info.get("type")
        if self.kind not in ("service_account", "authorized_user"):
            raise GoogleAuthError(
                f"unsupported Google credentials type {self.kind!r} in {str(path)!r}"
                " (expected service_account or authorized_user)"
            )
        self._info = info
        self._client = client
        self._scopes = " ".join(scopes)
        self._token: str | None = None
        self._expiry = 0.0
        self._lock = threading.Lock()
        self.token_uri = info.get("token_uri") or DEFAULT_TOKEN_URI

    def invalidate(self) -> None:
        with self._lock:
            self._token, self._expiry = None, 0.0

    def get(self) -> str:
        with self._lock:
            if self._token and time.time() < self._expiry - 60:
                return self._token
            self._token, self._expiry = self._fetch()
            return self._token

    def _fetch(self) -> tuple[str, float]:
        info = self._info
        if self.kind == "service_account":
            now = int(time.time())
            claims = {
                "iss": info["client_email"],
                "scope": self._scopes,
                "aud": self.token_uri,
                "iat": now,
                "exp": now + 3600,
            }
            assertion = make_jwt(claims, info["private_key"], info.get("private_key_id"))
            form = {
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": assertion,
            }
        else:
            form = {
                "grant_type": "refresh_token",
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
                "refresh_token": info["refresh_token"],
            }
        try:
            resp = self._client.post(self.token_uri, data=form)
        except httpx.HTTPError as exc:
            raise GoogleAuthError(f"token exchange failed: {type(exc).__name__}") from None
        if resp.status_code != 200:
            try:
                err = resp.json().get("error", "")
            except ValueError:
                err = ""
            raise GoogleAuthError(f"token exchange failed: HTTP {resp.status_code} {err}".strip())
        body = resp.json()
        token = body.get("access_token")
        if not token:
            raise GoogleAuthError("token exchange answered without access_token")
        return token, time.time() + float(body.get("expires_in", 3600))


# --------------------------------------------------------------------------- backend


class GoogleClassifier(Classifier):
    """Google Cloud Natural Language content classification over REST.

    ``api_version`` ``"v1"`` (with ``model`` ``"v1"`` or ``"v2"`` and
    ``categories`` ``"V1"`` or ``"V2"``) or ``"v2"`` (V2 categories only).
    ``taxonomy_version`` follows: V1 categories -> ``"v1"``, else ``"v2"``.
    """

    name = "google"

    def __init__(
        self,
        threshold: float = 0.5,
        *,
        api_version: str | None = None,
        model: str | None = None,
        categories: str | None = None,
        api_key: str | None = None,
        key_in_query: bool = False,
        credentials_file: str | os.PathLike[str] | None = None,
        base_url: str | None = None,
        language: str | None = None,
        min_tokens: int = MIN_TOKENS,
        qps: float | None = None,
        concurrency: int | None = None,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 32.0,
        timeout: float = 30.0,
        redact: bool | Redactor | None = None,
        transport: httpx.BaseTransport | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(threshold=threshold)
        api_version = env_or(api_version, "TOKENCENSUS_GOOGLE_API_VERSION", "v2")
        model = env_or(model, "TOKENCENSUS_GOOGLE_MODEL", "v2")
        categories = env_or(categories, "TOKENCENSUS_GOOGLE_CATEGORIES", "V2")
        base_url = env_or(base_url, "TOKENCENSUS_GOOGLE_BASE_URL", DEFAULT_BASE_URL)
        qps = env_or(qps, "TOKENCENSUS_GOOGLE_QPS", 10.0, float)
        concurrency = env_or(concurrency, "TOKENCENSUS_GOOGLE_CONCURRENCY", 8, int)
        redact = env_or(redact, "TOKENCENSUS_REDACT", False, env_flag)
        if api_version not in ("v1", "v2"):
            raise ValueError(f"api_version must be 'v1' or 'v2', not {api_version!r}")
        if model not in ("v1", "v2"):
            raise ValueError(f"model must be 'v1' or 'v2', not {model!r}")
        categories = categories.upper()
        if categories not in ("V1", "V2"):
            raise ValueError(f"categories must be 'V1' or 'V2', not {categories!r}")
        if api_version == "v2":
            model, categories = "v2", "V2"
        elif model == "v1":
            categories = "V1"
        self.api_version, self.model, self.categories = api_version, model, categories
        self.taxonomy_version = "v1" if categories == "V1" else "v2"
        self._paths = taxonomy.path_set(self.taxonomy_version)
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/{api_version}/documents:classifyText"
        self.language = language
        self.min_tokens = min_tokens
        self.concurrency = max(1, int(concurrency))
        self.redactor = make_redactor(redact)
        self.model_id = f"google-nl/{api_version}/{model}Model/{categories}" + (
            "+redact" if self.redactor else ""
        )
        self._client = httpx.Client(timeout=timeout, transport=transport)
        self._sender = Sender(
            self._client,
            TokenBucket(qps, burst=max(1.0, qps)),
            RetryPolicy(
                max_retries=max_retries, backoff_base=backoff_base, backoff_max=backoff_max
            ),
        )
        self._api_key = api_key or os.environ.get("GOOGLE_API_KEY") or None
        self._key_in_query = key_in_query
        self._token: AccessToken | None = None
        path = None
        if not self._api_key:
            path = adc_path(credentials_file)
            if path is None:
                raise GoogleAuthError(
                    "Google backend needs credentials: pass api_key= or set GOOGLE_API_KEY, "
                    "or point GOOGLE_APPLICATION_CREDENTIALS at a service-account JSON file "
                    "(or run `gcloud auth application-default login`)"
                )
            self._token = AccessToken(path, self._client)
        self.stats: dict[str, int] = {"requests": 0, "units": 0, "too_short": 0, "errors": 0}
        self._stats_lock = threading.Lock()
        # Resolved settings, so a pickled copy (e.g. a Ray worker) rebuilds the same backend.
        self._init_args = {
            "threshold": threshold,
            "api_version": api_version,
            "model": model,
            "categories": categories,
            "api_key": self._api_key,
            "key_in_query": key_in_query,
            "credentials_file": str(path) if path else None,
            "base_url": self.base_url,
            "language": language,
            "min_tokens": min_tokens,
            "qps": qps,
            "concurrency": self.concurrency,
            "max_retries": max_retries,
            "backoff_base": backoff_base,
            "backoff_max": backoff_max,
            "timeout": timeout,
            "redact": picklable_redact(self.redactor),
        }

    def __reduce__(self) -> tuple[Any, ...]:
        return (rebuild, (type(self), self._init_args))

    # -- public ---------------------------------------------------------------

    @property
    def auth_mode(self) -> str:
        return "api_key" if self._api_key else f"adc:{self._token.kind if self._token else '?'}"

    def info(self) -> dict[str, Any]:
        out = super().info()
        out.update(
            {
                "endpoint": self.url,
                "api_version": self.api_version,
                "model": f"{self.model}Model",
                "categories": self.categories,
                "auth": self.auth_mode,
                "redact": self.redactor.engine if self.redactor else None,
                "min_tokens": self.min_tokens,
            }
        )
        return out

    def estimate_cost(self, texts: Sequence[str | None], **kwargs: Any) -> dict[str, Any]:
        """:func:`estimate_cost` with this backend's ``min_tokens``."""
        kwargs.setdefault("min_tokens", self.min_tokens)
        return estimate_cost(texts, **kwargs)

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        return [
            r if isinstance(r, Prediction) else self._failed(r)
            for r in map_concurrent(self._one, list(texts), self.concurrency)
        ]

    def close(self) -> None:
        self._client.close()

    # -- internals ------------------------------------------------------------

    def _bump(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] = self.stats.get(key, 0) + n

    def _failed(self, exc: BaseException) -> Prediction:
        self._bump("errors")
        if isinstance(exc, GoogleAuthError):
            return Prediction(error=f"auth: {exc}")
        return Prediction(error=error_reason(exc))

    def _body(self, text: str) -> dict[str, Any]:
        document: dict[str, Any] = {"type": "PLAIN_TEXT", "content": text}
        if self.language:
            document["languageCode" if self.api_version == "v2" else "language"] = self.language
        body: dict[str, Any] = {"document": document}
        if self.api_version == "v1":
            if self.model == "v1":
                body["classificationModelOptions"] = {"v1Model": {}}
            else:
                body["classificationModelOptions"] = {
                    "v2Model": {"contentCategoriesVersion": self.categories}
                }
        return body

    def _auth(self) -> tuple[dict[str, str], dict[str, str]]:
        if self._api_key:
            if self._key_in_query:
                return {}, {"key": self._api_key}
            return {"x-goog-api-key": self._api_key}, {}
        assert self._token is not None
        return {"authorization": f"Bearer {self._token.get()}"}, {}

    def _one(self, text: str) -> Prediction:
        window = prompt_window(text)
        if self.redactor is not None:
            window = self.redactor.redact(window)
        if not window.strip():
            return Prediction(error="empty")
        if self.min_tokens:
            n = count_tokens(window)
            if n < self.min_tokens:
                self._bump("too_short")
                return Prediction(error=f"too_short: ~{n} tokens < {self.min_tokens} (not sent)")
        params = self._auth()[1]
        refreshed = False

        def on_status(resp: httpx.Response) -> bool:
            nonlocal refreshed
            if resp.status_code == 401 and self._token is not None and not refreshed:
                refreshed = True
                self._token.invalidate()
                return True
            return False

        self._bump("requests")
        try:
            resp = self._sender.send(
                "POST",
                self.url,
                json=self._body(window),
                headers=lambda: self._auth()[0],
                params=params or None,
                on_status=on_status,
            )
        except RequestFailed as exc:
            self._bump("errors")
            return Prediction(error=str(exc))
        self._bump("units", units_for(window))
        return self._parse(resp, window)

    def _parse(self, resp: httpx.Response, window: str) -> Prediction:
        try:
            body = resp.json()
        except ValueError:
            self._bump("errors")
            return Prediction(error=f"malformed_response: HTTP {resp.status_code}, not JSON")
        if resp.status_code != 200:
            return self._api_error(resp.status_code, body, window)
        if not isinstance(body, dict):
            self._bump("errors")
            return Prediction(error="malformed_response: not a JSON object")
        if body.get("languageSupported") is False:
            lang = body.get("languageCode") or "und"
            return Prediction(error=f"unsupported_language:{lang}")
        cats = body.get("categories") or []
        labels: list[tuple[str, float]] = []
        try:
            for c in cats:
                name, conf = str(c["name"]), float(c.get("confidence", 0.0))
                if name not in self._paths:
                    self._bump("unknown_paths")  # kept: bucket rules match by prefix
                if conf >= self.threshold:
                    labels.append((name, conf))
        except (KeyError, TypeError, ValueError):
            self._bump("errors")
            return Prediction(error="malformed_response: bad categories")
        labels.sort(key=lambda x: -x[1])
        return Prediction(labels=labels)

    def _api_error(self, status: int, body: Any, window: str) -> Prediction:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        if not isinstance(err, dict):
            err = {}
        message = scrub(str(err.get("message", "")), [window])
        code = err.get("status") or f"HTTP_{status}"
        low = message.lower()
        if code == "INVALID_ARGUMENT" or status == 400:
            m = _LANG_RX.search(message)
            if m:
                return Prediction(error=f"unsupported_language:{m.group(1).lower()}")
            if "not supported" in low and "language" in low:
                return Prediction(error="unsupported_language:und")
            if "too few tokens" in low or "too short" in low:
                self._bump("too_short")
                return Prediction(error=f"too_short: {message}")
        self._bump("errors")
        return Prediction(error=f"api_error:{code}: {message}".rstrip(": "))
