"""Local fake servers speaking Google's Natural Language REST and OpenAI chat completions.

They bind 127.0.0.1 on a free port and answer in the real wire formats, so
the backends are tested end to end over HTTP without any network. Both
record every request (``server.requests``) and play scripted faults
(``server.fail_next("429", "500", "timeout", "malformed", ...)``).

Classification is by keywords (see ``RULES``), so tests steer outcomes with
words in the text: "python" -> programming, "recipe" -> cooking, "dragon" ->
roleplaying, "bogus" -> a path that is not in the taxonomy (OpenAI fake),
"skipme" -> the item is left out of the answer (OpenAI fake; "skiponce": only the
first time); Thai script is
an unsupported language (Google fake).

Usage::

    with start_google_server(api_key="k") as g:
        clf = GoogleClassifier(base_url=g.base_url, api_key="k")
    with start_openai_server(logprobs=True) as o:
        clf = OpenAICompatClassifier(base_url=o.base_url + "/v1", api_key="sk-test")
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import rsa

#: (keyword, V2 path, V1 path, probability behind logprobs, the JSON "score").
RULES: list[tuple[str, str, str, float, float]] = [
    (
        "python",
        "/Computers & Electronics/Programming/Other",
        "/Computers & Electronics/Programming",
        0.9,
        0.7,
    ),
    (
        "recipe",
        "/Food & Drink/Cooking & Recipes/Other",
        "/Food & Drink/Cooking & Recipes",
        0.8,
        0.65,
    ),
    ("dragon", "/Games/Roleplaying Games", "/Games/Roleplaying Games", 0.95, 0.75),
    ("doctor", "/Health/Other", "/Health", 0.7, 0.6),
    ("bogus", "/Made Up/Not A Category", "/Made Up/Not A Category", 0.9, 0.9),
]

_TOKEN_RX = re.compile(r"[^\W_]+|[^\w\s]|_")
_THAI_RX = re.compile(r"[\u0e00-\u0e7f]")


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class FakeState:
    """What a fake server knows: its requests, queued faults and settings."""

    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    faults: deque[str] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    slow_seconds: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def fail_next(self, *faults: str) -> None:
        """Queue faults for the next requests, one each, in order.

        ``"429"`` (with ``Retry-After: 0``), ``"429:N"`` (``Retry-After: N``),
        ``"500"``, ``"502"``, ``"503"``, ``"timeout"`` (answers after
        ``slow_seconds``), ``"malformed"`` (200 with a body that is not JSON),
        ``"401"``.
        """
        with self.lock:
            self.faults.extend(faults)

    def always_fail(self, fault: str, n: int = 1000) -> None:
        self.fail_next(*([fault] * n))

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.faults.clear()

    def api_requests(self, marker: str = "") -> list[Recorded]:
        """Requests whose path contains ``marker`` (default all)."""
        with self.lock:
            return [r for r in self.requests if marker in r.path]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence
        return

    def _send(self, status: int, body: bytes | str | dict[str, Any], headers: dict | None = None):
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        state = self.server.state
        rec = Recorded(
            "POST",
            split.path,
            parse_qs(split.query),
            {k.lower(): v for k, v in self.headers.items()},
            raw,
        )
        with state.lock:
            state.requests.append(rec)
            fault = state.faults.popleft() if state.faults else None
        if fault is not None and not split.path.endswith("/token"):
            if fault == "timeout":
                time.sleep(state.slow_seconds)
            elif fault.startswith("429"):
                retry_after = fault.split(":", 1)[1] if ":" in fault else "0"
                return self._send(
                    429,
                    _err(
                        429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED"
                    ),
                    {"retry-after": retry_after},
                )
            elif fault in ("500", "502", "503"):
                return self._send(int(fault), _err(int(fault), "Internal error.", "INTERNAL"))
            elif fault == "401":  # as if the token expired: every issued token is revoked
                with state.lock:
                    state.options.get("tokens", set()).clear()
                return self._send(401, _err(401, "Invalid credentials.", "UNAUTHENTICATED"))
            elif fault == "malformed":
                return self._send(200, b'{"categories": [ {"name": "/Adult", "conf')
        try:
            status, body, headers = self.server.route(rec)
        except Exception as exc:  # a bug in the fake should not hang the test
            status, body, headers = 500, _err(500, f"fake server bug: {exc!r}", "INTERNAL"), {}
        self._send(status, body, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, route, state: FakeState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.route = route
        self.state = state


@contextlib.contextmanager
def _serve(route, state: FakeState) -> Iterator[FakeState]:
    server = _Server(route, state)
    host, port = server.server_address[:2]
    state.base_url = f"http://{host}:{port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _err(code: int, message: str, status: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def _classify(text: str, version: str = "v2") -> list[tuple[str, float, float]]:
    low = text.lower()
    out = []
    for kw, v2, v1, p, score in RULES:
        if kw in low:
            out.append((v2 if version == "v2" else v1, p, score))
    return out


# --------------------------------------------------------------------------- Google


_KEY_CACHE: dict[str, rsa.RsaKey] = {}


def test_key() -> rsa.RsaKey:
    """A process-wide throwaway RSA key (made once; fixed seed)."""
    if "k" not in _KEY_CACHE:
        _KEY_CACHE["k"] = rsa.generate(1024, seed=20261125)
    return _KEY_CACHE["k"]


def write_service_account(path: Path, state: FakeState, *, email: str = "sa@test.local") -> Path:
    """A service-account JSON whose ``token_uri`` is the fake's token endpoint."""
    info = {
        "type": "service_account",
        "project_id": "tokencensus-test",
        "private_key_id": "fake-kid-1",
        "private_key": test_key().private_pem(),
        "client_email": email,
        "client_id": "1234567890",
        "token_uri": state.base_url + "/token",
    }
    path.write_text(json.dumps(info), encoding="utf-8")
    return path


def write_authorized_user(path: Path, state: FakeState) -> Path:
    """An ``authorized_user`` ADC file (as ``gcloud auth application-default login`` writes)."""
    info = {
        "type": "authorized_user",
        "client_id": "fake-client",
        "client_secret": "fake-secret",
        "refresh_token": "fake-refresh",
        "token_uri": state.base_url + "/token",
    }
    path.write_text(json.dumps(info), encoding="utf-8")
    return path


def _b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _google_route(state: FakeState):
    opts = state.options

    def token(rec: Recorded):
        form = {k: v[0] for k, v in parse_qs(rec.body.decode()).items()}
        grant = form.get("grant_type")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            try:
                h64, c64, s64 = form["assertion"].split(".")
                header = json.loads(_b64url_decode(h64))
                claims = json.loads(_b64url_decode(c64))
                ok = header.get("alg") == "RS256" and test_key().verify_rs256(
                    f"{h64}.{c64}".encode(), _b64url_decode(s64)
                )
            except (KeyError, ValueError):
                ok, claims = False, {}
            if (
                not ok
                or claims.get("aud") != state.base_url + "/token"
                or claims.get("exp", 0) < time.time()
                or "cloud-language" not in claims.get("scope", "")
            ):
                return 400, {"error": "invalid_grant", "error_description": "Invalid JWT"}, {}
        elif grant == "refresh_token":
            if form.get("refresh_token") != "fake-refresh":
                return 400, {"error": "invalid_grant"}, {}
        else:
            return 400, {"error": "unsupported_grant_type"}, {}
        with state.lock:
            n = opts.setdefault("issued", 0) + 1
            opts["issued"] = n
            tok = f"ya29.fake-{n}"
            opts.setdefault("tokens", set()).add(tok)
        return 200, {"access_token": tok, "expires_in": 3599, "token_type": "Bearer"}, {}

    def authorised(rec: Recorded) -> bool:
        key = opts.get("api_key")
        if key and (rec.headers.get("x-goog-api-key") == key or rec.query.get("key") == [key]):
            return True
        auth = rec.headers.get("authorization", "")
        with state.lock:
            tokens = set(opts.get("tokens", ()))
        return auth.startswith("Bearer ") and auth[7:] in tokens

    def route(rec: Recorded):
        if rec.path == "/token":
            return token(rec)
        m = re.fullmatch(r"/(v1|v2)/documents:classifyText", rec.path)
        if not m:
            return 404, _err(404, "Not found.", "NOT_FOUND"), {}
        if not authorised(rec):
            return 401, _err(401, "Request is missing valid credentials.", "UNAUTHENTICATED"), {}
        api = m.group(1)
        try:
            body = rec.json()
            doc = body["document"]
            content = doc["content"]
        except (ValueError, KeyError, TypeError):
            return 400, _err(400, "Invalid JSON payload received.", "INVALID_ARGUMENT"), {}
        version = "v2"
        opts_ = body.get("classificationModelOptions")
        if api == "v2":
            if opts_ is not None:
                return (
                    400,
                    _err(
                        400,
                        'Invalid JSON payload received. Unknown name "classificationModelOptions"',
                        "INVALID_ARGUMENT",
                    ),
                    {},
                )
        elif opts_ is None or "v1Model" in opts_:
            version = "v1"
        else:
            cv = opts_.get("v2Model", {}).get("contentCategoriesVersion", "V1")
            version = "v2" if cv == "V2" else "v1"
        lang = (
            "th"
            if _THAI_RX.search(content)
            else (doc.get("languageCode") or doc.get("language") or "en")
        )
        if lang in opts.get("unsupported", {"th"}):
            if api == "v2":
                return 200, {"categories": [], "languageCode": lang, "languageSupported": False}, {}
            return (
                400,
                _err(
                    400,
                    f"The language {lang} is not supported for document_classification.",
                    "INVALID_ARGUMENT",
                ),
                {},
            )
        if len(_TOKEN_RX.findall(content)) < 20:
            return (
                400,
                _err(
                    400,
                    "Invalid text content: too few tokens (words) to process.",
                    "INVALID_ARGUMENT",
                ),
                {},
            )
        cats = [{"name": path, "confidence": p} for path, p, _ in _classify(content, version)]
        resp: dict[str, Any] = {"categories": cats}
        if api == "v2":
            resp.update({"languageCode": lang, "languageSupported": True})
        return 200, resp, {}

    return route


@contextlib.contextmanager
def start_google_server(
    api_key: str | None = "test-key",
    *,
    unsupported: set[str] | None = None,
    slow_seconds: float = 1.0,
) -> Iterator[FakeState]:
    """A fake ``language.googleapis.com`` (v1 and v2 ``documents:classifyText``)
    plus an OAuth2 token endpoint at ``/token`` that verifies RS256 JWT-bearer
    assertions signed with :func:`test_key` (see :func:`write_service_account`).
    """
    state = FakeState(slow_seconds=slow_seconds)
    state.options["api_key"] = api_key
    state.options["unsupported"] = unsupported if unsupported is not None else {"th"}
    with _serve(_google_route(state), state) as s:
        yield s


# --------------------------------------------------------------------------- OpenAI


_TEXT_RX = re.compile(r'<text id="(\d+)">\n(.*?)\n</text>', re.S)
_PATH_VALUE_RX = re.compile(r'"path"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _logprob_tokens(content: str, probs: list[float]) -> list[dict[str, Any]]:
    """Split ``content`` into ~4-character tokens; the tokens of the k-th path
    value share log(probs[k]); every other token has logprob 0."""
    spans = [(m.start(1), m.end(1)) for m in _PATH_VALUE_RX.finditer(content)]
    pieces: list[tuple[int, int]] = []
    i = 0
    while i < len(content):
        j = min(len(content), i + 4)
        for s, e in spans:  # split at value boundaries so tokens nest in them
            if i < s < j:
                j = s
            if i < e < j:
                j = e
        pieces.append((i, j))
        i = j
    counts = [sum(1 for a, b in pieces if a >= s and b <= e) for s, e in spans]
    out = []
    for a, b in pieces:
        lp = 0.0
        for k, (s, e) in enumerate(spans):
            if a >= s and b <= e:
                lp = math.log(probs[k]) / counts[k]
        tok = content[a:b]
        out.append({"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": []})
    return out


def _openai_route(state: FakeState):
    opts = state.options

    def route(rec: Recorded):
        if rec.path not in ("/v1/chat/completions", "/chat/completions"):
            return 404, {"error": {"message": "not found", "type": "invalid_request_error"}}, {}
        key = opts.get("api_key")
        if key and rec.headers.get("authorization") != f"Bearer {key}":
            return (
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
                {},
            )
        body = rec.json()
        fmt = body.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema") or {}
        path_schema = (
            schema.get("properties", {})
            .get("items", {})
            .get("items", {})
            .get("properties", {})
            .get("categories", {})
            .get("items", {})
            .get("properties", {})
            .get("path", {})
        )
        enum = path_schema.get("enum")
        if enum is not None and opts.get("max_enum") is not None and len(enum) > opts["max_enum"]:
            return (
                400,
                {
                    "error": {
                        "message": f"Invalid schema for response_format 'content_categories': "
                        f"enum has {len(enum)} values, the limit is {opts['max_enum']}.",
                        "type": "invalid_request_error",
                        "param": "response_format",
                        "code": "invalid_json_schema",
                    }
                },
                {},
            )
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        items, probs = [], []
        for sid, text in _TEXT_RX.findall(user):
            if "skipme" in text.lower():
                continue
            if "skiponce" in text.lower():
                with state.lock:
                    seen = state.options.setdefault("skipped", set())
                    first = text not in seen
                    seen.add(text)
                if first:
                    continue
            cats = []
            for path, p, score in _classify(text):
                if enum is not None and path not in enum and "bogus" not in text.lower():
                    continue
                cats.append({"path": path, "score": score})
                probs.append(p)
            items.append({"id": int(sid), "categories": cats})
        content = json.dumps({"items": items})
        want_lp = bool(body.get("logprobs")) and opts.get("logprobs", True)
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": {"content": _logprob_tokens(content, probs), "refusal": None}
            if want_lp
            else None,
            "finish_reason": "stop",
        }
        return (
            200,
            {
                "id": f"chatcmpl-fake-{len(state.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [choice],
                "usage": {
                    "prompt_tokens": len(user) // 4,
                    "completion_tokens": len(content) // 4,
                    "total_tokens": (len(user) + len(content)) // 4,
                },
            },
            {},
        )

    return route


@contextlib.contextmanager
def start_openai_server(
    api_key: str | None = "sk-test",
    *,
    logprobs: bool = True,
    max_enum: int | None = None,
    slow_seconds: float = 1.0,
) -> Iterator[FakeState]:
    """A fake OpenAI-compatible ``/v1/chat/completions`` with structured output
    and (``logprobs=True``) token logprobs. ``max_enum`` makes it reject larger
    enums with a 400 as OpenAI's hosted API does."""
    state = FakeState(slow_seconds=slow_seconds)
    state.options.update({"api_key": api_key, "logprobs": logprobs, "max_enum": max_enum})
    with _serve(_openai_route(state), state) as s:
        yield s
