"""Google and OpenAI-compatible backends against local fake servers (no network)."""

from __future__ import annotations

import json
import logging
import time

import pyarrow as pa
import pytest

from tests.fakes import (
    FAST,
    clear_ambient_credentials,
    start_google_server,
    start_openai_server,
    write_authorized_user,
    write_service_account,
)
from tokencensus import taxonomy
from tokencensus.classify import Prediction, classify_batch, get_classifier
from tokencensus.classify._http import (
    RetryPolicy,
    TokenBucket,
    map_concurrent,
    parse_retry_after,
    scrub,
)
from tokencensus.classify.google import (
    PRICE_SOURCE,
    GoogleAuthError,
    GoogleClassifier,
    count_tokens,
    estimate_cost,
    make_jwt,
    price_units,
)
from tokencensus.classify.openai_compat import (
    PROMPT_VERSION,
    OpenAICompatClassifier,
    response_schema,
    taxonomy_hash,
)
from tokencensus.classify.redact import Redactor, regex_redact

FILLER = (
    " I would like a thorough explanation with several worked examples, please, because"
    " I am still learning and want to understand every single step of it clearly."
)
PY = "How do I read a CSV file in python and sum one column?" + FILLER
RECIPE = "Give me a recipe for a quick vegetarian lasagna for four people." + FILLER
PLAIN = "Tell me something interesting about the history of the bicycle in Europe." + FILLER
SHORT = "hi there"
THAI = "ช่วยเขียนบทความเกี่ยวกับการท่องเที่ยวในประเทศไทย" + FILLER


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch, tmp_path):
    clear_ambient_credentials(monkeypatch, tmp_path)


def google(g, **kw) -> GoogleClassifier:
    kw.setdefault("api_key", "test-key")
    return GoogleClassifier(base_url=g.base_url, **{**FAST, **kw})


def openai(o, **kw) -> OpenAICompatClassifier:
    kw.setdefault("api_key", "sk-test")
    return OpenAICompatClassifier(base_url=o.base_url + "/v1", model="fake-1", **{**FAST, **kw})


def assert_no_text(strings, texts=(PY, RECIPE, PLAIN, SHORT, THAI)):
    for s in strings:
        for t in texts:
            assert t[:30] not in (s or ""), "prompt text leaked into an error or log"


# --------------------------------------------------------------------------- Google


def test_google_v2_endpoint_api_key_header():
    with start_google_server() as g:
        clf = google(g)
        preds = clf.predict([PY, RECIPE, PLAIN])
        reqs = g.api_requests("classifyText")
    assert [p.labels[0][0] for p in preds[:2]] == [
        "/Computers & Electronics/Programming/Other",
        "/Food & Drink/Cooking & Recipes/Other",
    ]
    assert preds[0].labels[0][1] == pytest.approx(0.9)
    assert preds[2].labels == [] and preds[2].error is None
    assert len(reqs) == 3
    assert {r.path for r in reqs} == {"/v2/documents:classifyText"}
    assert all(r.headers["x-goog-api-key"] == "test-key" and not r.query for r in reqs)
    body = reqs[0].json()
    assert body["document"]["type"] == "PLAIN_TEXT" and "classificationModelOptions" not in body
    assert clf.taxonomy_version == "v2" and clf.model_id == "google-nl/v2/v2Model/V2"
    assert all(p in taxonomy.path_set("v2") for pr in preds for p, _ in pr.labels)


@pytest.mark.parametrize(
    ("model", "categories", "options", "tax", "path"),
    [
        ("v1", "V1", {"v1Model": {}}, "v1", "/Computers & Electronics/Programming"),
        (
            "v2",
            "V1",
            {"v2Model": {"contentCategoriesVersion": "V1"}},
            "v1",
            "/Computers & Electronics/Programming",
        ),
        (
            "v2",
            "V2",
            {"v2Model": {"contentCategoriesVersion": "V2"}},
            "v2",
            "/Computers & Electronics/Programming/Other",
        ),
    ],
)
def test_google_v1_endpoint_model_options(model, categories, options, tax, path):
    with start_google_server() as g:
        clf = google(g, api_version="v1", model=model, categories=categories, key_in_query=True)
        (pred,) = clf.predict([PY])
        (req,) = g.api_requests("classifyText")
    assert req.path == "/v1/documents:classifyText"
    assert req.json()["classificationModelOptions"] == options
    assert req.query["key"] == ["test-key"] and "x-goog-api-key" not in req.headers
    assert clf.taxonomy_version == tax
    assert pred.labels[0][0] == path and path in taxonomy.path_set(tax)


def test_google_entry_point_and_info():
    with start_google_server() as g:
        clf = get_classifier("google", base_url=g.base_url, api_key="test-key", threshold=0.3)
        assert isinstance(clf, GoogleClassifier) and clf.threshold == 0.3
        info = clf.info()
    assert info["name"] == "google" and info["auth"] == "api_key"
    assert "test-key" not in json.dumps(info)


def test_google_service_account_jwt_exchange(tmp_path, monkeypatch):
    with start_google_server(api_key=None) as g:
        sa = write_service_account(tmp_path / "sa.json", g)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(sa))
        clf = google(g, api_key=None, concurrency=4)
        preds = clf.predict([PY, RECIPE, PLAIN, PY])
        token_reqs = g.api_requests("/token")
        api = g.api_requests("classifyText")
    assert all(p.error is None for p in preds), [p.error for p in preds]
    assert len(token_reqs) == 1  # one token, reused by every request
    assert all(r.headers["authorization"] == "Bearer ya29.fake-1" for r in api)
    assert clf.auth_mode == "adc:service_account"


def test_google_token_refreshed_after_401(tmp_path):
    with start_google_server(api_key=None) as g:
        clf = google(
            g,
            api_key=None,
            credentials_file=write_service_account(tmp_path / "s.json", g),
            concurrency=1,
        )
        assert clf.predict([PY])[0].error is None
        g.fail_next("401")
        (pred,) = clf.predict([RECIPE])
        assert len(g.api_requests("/token")) == 2
        last = g.api_requests("classifyText")[-1]
    assert pred.error is None and pred.labels
    assert last.headers["authorization"] == "Bearer ya29.fake-2"


def test_google_authorized_user_refresh_token(tmp_path):
    with start_google_server(api_key=None) as g:
        path = write_authorized_user(tmp_path / "adc.json", g)
        clf = google(g, api_key=None, credentials_file=path)
        (pred,) = clf.predict([PY])
    assert pred.error is None and pred.labels


def test_google_bad_key_signature_is_an_error_not_a_crash(tmp_path):
    with start_google_server(api_key=None) as g:
        path = write_service_account(tmp_path / "sa.json", g)
        info = json.loads(path.read_text())
        info["token_uri"] = g.base_url + "/wrong-audience"
        path.write_text(json.dumps(info))
        clf = google(g, api_key=None, credentials_file=path)
        preds = clf.predict([PY, RECIPE])
    assert all(p.error and p.error.startswith("auth:") for p in preds)


def test_google_without_credentials_says_how_to_configure():
    with pytest.raises(GoogleAuthError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        GoogleClassifier(base_url="http://127.0.0.1:9")


def test_google_api_key_from_env(monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
    with start_google_server() as g:
        clf = GoogleClassifier(base_url=g.base_url, **FAST)
        assert clf.predict([PY])[0].labels


def test_jwt_is_rs256_and_verifies():
    from tests.fakes import test_key

    key = test_key()
    token = make_jwt({"iss": "a", "aud": "b"}, key.private_pem(), "kid-1")
    import base64

    h, c, s = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(h + "=="))
    assert header == {"alg": "RS256", "typ": "JWT", "kid": "kid-1"}
    assert key.verify_rs256(f"{h}.{c}".encode(), base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))


def test_google_too_short_is_unclassified_not_fatal():
    with start_google_server() as g:
        clf = google(g)
        preds = clf.predict([SHORT, PY, ""])
        assert len(g.api_requests("classifyText")) == 1  # the short one was never sent
        # With the local check off, Google's own INVALID_ARGUMENT says the same.
        (server_side,) = google(g, min_tokens=0).predict([SHORT])
    assert preds[0].error.startswith("too_short:") and preds[0].labels == []
    assert preds[1].labels and preds[2].error == "empty"
    assert server_side.error.startswith("too_short:") and "too few tokens" in server_side.error


@pytest.mark.parametrize("api_version", ["v1", "v2"])
def test_google_unsupported_language_flagged(api_version):
    with start_google_server() as g:
        preds = google(g, api_version=api_version).predict([THAI, PY])
    assert preds[0].error == "unsupported_language:th" and preds[0].labels == []
    assert preds[1].labels


def test_google_retries_429_then_succeeds_honouring_retry_after():
    with start_google_server() as g:
        g.fail_next("429:0.3", "503")
        clf = google(g, concurrency=1)
        t0 = time.monotonic()
        (pred,) = clf.predict([PY])
        elapsed = time.monotonic() - t0
        assert len(g.api_requests("classifyText")) == 3
    assert pred.error is None and pred.labels
    assert elapsed >= 0.3  # waited at least what Retry-After asked


def test_google_500_exhausts_retries_and_records_error(caplog):
    caplog.set_level(logging.DEBUG)
    with start_google_server() as g:
        g.always_fail("500")
        preds = google(g, max_retries=2, concurrency=2).predict([PY, RECIPE, PLAIN])
        assert len(g.api_requests("classifyText")) == 9
    assert [p.error for p in preds] == ["http_500 after 3 attempt(s)"] * 3
    assert_no_text([p.error for p in preds] + [caplog.text])


def test_google_timeout_retried_then_recorded():
    with start_google_server(slow_seconds=0.6) as g:
        g.fail_next("timeout")
        clf = google(g, timeout=0.2, concurrency=1, max_retries=1)
        ok = clf.predict([PY])[0]
        g.fail_next("timeout", "timeout")
        bad = clf.predict([RECIPE])[0]
    assert ok.error is None and ok.labels
    assert bad.error == "timeout after 2 attempt(s)" and bad.labels == []


def test_google_malformed_json_recorded():
    with start_google_server() as g:
        g.fail_next("malformed")
        preds = google(g, concurrency=1).predict([PY, RECIPE])
    assert preds[0].error.startswith("malformed_response")
    assert preds[1].error is None and preds[1].labels


def test_google_every_text_gets_a_prediction_under_mixed_faults(caplog):
    caplog.set_level(logging.DEBUG)
    texts = [PY, SHORT, RECIPE, THAI, PLAIN, PY + " again", "", RECIPE + " twice"] * 3
    with start_google_server(slow_seconds=0.4) as g:
        g.fail_next("429", "500", "malformed", "timeout", "503", "500", "500", "500")
        preds = google(g, max_retries=2, timeout=0.2, concurrency=4).predict(texts)
    assert len(preds) == len(texts)
    assert all(isinstance(p, Prediction) for p in preds)
    assert all(p.labels or p.error or p.labels == [] for p in preds)
    assert_no_text([p.error for p in preds] + [caplog.text])


def test_google_redaction_before_sending():
    secret = "Mail me at jane.doe@example.com or call +44 20 7946 0958 about python." + FILLER
    with start_google_server() as g:
        clf = google(g, redact=True)
        (pred,) = clf.predict([secret])
        sent = g.api_requests("classifyText")[0].json()["document"]["content"]
    assert pred.labels
    assert "jane.doe@example.com" not in sent and "7946" not in sent
    assert "<EMAIL>" in sent and "<PHONE>" in sent
    assert clf.model_id.endswith("+redact")


def test_google_classify_batch_records_errors():
    batch = pa.table({"request_id": ["a", "b", "c", "d"], "prompt_text": [PY, SHORT, None, THAI]})
    with start_google_server() as g:
        out = classify_batch(batch, google(g))
    rows = {r["request_id"]: r for r in out.to_pylist()}
    assert set(rows) == {"a", "b", "d"}
    assert rows["a"]["labels"][0]["path"].startswith("/Computers")
    assert rows["b"]["error"].startswith("too_short")
    assert rows["d"]["error"] == "unsupported_language:th"


def test_estimate_cost_units_and_tiers():
    texts = ["x " * 1000] * 10 + [SHORT, "", None]  # 2,000 chars -> window of 1,000
    est = estimate_cost(texts)
    assert est["requests"] == 10 and est["units"] == 10 and est["skipped_too_short"] == 3
    assert est["usd"] == 0.0  # inside the free 30,000 units
    assert estimate_cost(texts, already_used=30_000)["usd"] == pytest.approx(0.02)
    assert estimate_cost(texts, free_tier=False)["usd"] == pytest.approx(0.02)
    assert price_units(300_000) == pytest.approx(220_000 * 0.002 + 50_000 * 0.0005)
    assert price_units(6_000_000) == pytest.approx(440 + 4_750_000 * 0.0005 + 1_000_000 * 0.0001)
    assert "cloud.google.com/natural-language/pricing" in est["price_source"] == PRICE_SOURCE
    assert count_tokens("one, two three.") == 5


def test_estimate_cost_sends_nothing():
    with start_google_server() as g:
        est = google(g).estimate_cost([PY, RECIPE, SHORT])
        assert g.api_requests() == []
    assert est["requests"] == 2 and est["units"] == 2


# --------------------------------------------------------------------------- OpenAI


def test_openai_batched_structured_output_with_logprob_confidence():
    texts = [PY, RECIPE, PLAIN, "dragon roleplay please" + FILLER, "python recipe" + FILLER]
    with start_openai_server() as o:
        clf = openai(o, batch_size=2)
        preds = clf.predict(texts)
        reqs = o.api_requests("chat/completions")
    assert len(reqs) == 3
    body = reqs[0].json()
    assert reqs[0].headers["authorization"] == "Bearer sk-test"
    assert body["model"] == "fake-1" and body["logprobs"] is True
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    path_enum = fmt["json_schema"]["schema"]["properties"]["items"]["items"]["properties"][
        "categories"
    ]["items"]["properties"]["path"]["enum"]
    assert len(path_enum) == 1091 and set(path_enum) == taxonomy.path_set("v2")
    user = body["messages"][1]["content"]
    assert '<text id="1">' in user and '<text id="2">' in user and '<text id="3">' not in user
    # Confidence is the probability of the path's tokens (0.9), not the score field (0.7).
    assert preds[0].labels == [("/Computers & Electronics/Programming/Other", pytest.approx(0.9))]
    assert preds[1].labels[0][1] == pytest.approx(0.8)
    assert preds[2].labels == [] and preds[2].error is None
    assert preds[3].labels[0][0] == "/Games/Roleplaying Games"
    assert [p for p, _ in preds[4].labels] == [
        "/Computers & Electronics/Programming/Other",
        "/Food & Drink/Cooking & Recipes/Other",
    ]
    assert clf.stats["logprob_confidences"] > 0 and clf.stats["score_confidences"] == 0


def test_openai_score_confidence_without_logprobs():
    with start_openai_server(logprobs=False) as o:
        clf = openai(o)
        (pred,) = clf.predict([PY])
    assert pred.labels == [("/Computers & Electronics/Programming/Other", pytest.approx(0.7))]
    assert clf.stats["score_confidences"] == 1


def test_openai_model_id_and_info_are_versioned():
    clf = OpenAICompatClassifier(base_url="http://127.0.0.1:9/v1", model="m", api_key="k")
    assert PROMPT_VERSION in clf.model_id and taxonomy_hash("v2") in clf.model_id
    info = clf.info()
    assert info["prompt_version"] == PROMPT_VERSION and info["taxonomy_hash"] == taxonomy_hash()
    assert info["taxonomy"] == "v2" and "k" != info.get("api_key")
    v1 = OpenAICompatClassifier(base_url="http://x/v1", taxonomy_version="v1")
    assert v1.model_id != clf.model_id and taxonomy_hash("v1") != taxonomy_hash("v2")
    assert (
        len(
            response_schema("v1")["properties"]["items"]["items"]["properties"]["categories"][
                "items"
            ]["properties"]["path"]["enum"]
        )
        == 620
    )


def test_openai_paths_outside_taxonomy_dropped_and_counted():
    texts = ["bogus stuff" + FILLER, "bogus python" + FILLER]
    with start_openai_server() as o:
        clf = openai(o)
        preds = clf.predict(texts)
    assert preds[0].labels == [] and preds[0].error.startswith("invalid_paths: 1")
    assert [p for p, _ in preds[1].labels] == ["/Computers & Electronics/Programming/Other"]
    assert preds[1].error is None
    assert clf.stats["invalid_paths"] == 2
    assert "/Made Up" not in (preds[0].error or "")


def test_openai_missing_item_asked_again_then_recorded():
    with start_openai_server() as o:
        clf = openai(o)
        preds = clf.predict([PY, "skipme please" + FILLER, "python skiponce" + FILLER, RECIPE])
        reqs = o.api_requests()
    assert len(reqs) == 2  # the batch, then one re-ask for the two left out
    assert reqs[1].json()["messages"][1]["content"].count("<text id=") == 2
    assert preds[1].error == "missing_in_response" and preds[1].labels == []
    assert preds[2].labels and preds[2].error is None  # recovered on the re-ask
    assert preds[0].labels and preds[3].labels
    assert clf.stats["missing_items"] == 1


def test_openai_api_key_from_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with start_openai_server() as o:
        clf = OpenAICompatClassifier(base_url=o.base_url + "/v1", **FAST)
        assert clf.predict([PY])[0].labels
    assert clf.model.startswith("gpt")


def test_openai_wrong_key_is_a_recorded_error():
    with start_openai_server() as o:
        preds = openai(o, api_key="wrong").predict([PY, RECIPE])
    assert all(p.error.startswith("api_error:invalid_api_key") for p in preds)


def test_openai_429_then_success_and_500_exhausted(caplog):
    caplog.set_level(logging.DEBUG)
    with start_openai_server() as o:
        o.fail_next("429", "429")
        ok = openai(o).predict([PY, RECIPE])
        assert len(o.api_requests()) == 3
        o.always_fail("500")
        bad = openai(o, max_retries=1, batch_size=2).predict([PY, RECIPE, PLAIN])
    assert all(p.labels for p in ok)
    assert [p.error for p in bad] == ["http_500 after 2 attempt(s)"] * 3
    assert_no_text([p.error for p in bad] + [caplog.text])


def test_openai_timeout_and_malformed():
    with start_openai_server(slow_seconds=0.6) as o:
        o.fail_next("timeout", "malformed")
        clf = openai(o, timeout=0.2, concurrency=1)
        preds = clf.predict([PY, RECIPE])  # timeout retried, malformed asked again
        assert all(p.labels for p in preds)
        o.always_fail("malformed")
        bad = openai(o, parse_retries=1).predict([PY, RECIPE])
    assert all(p.error.startswith("malformed_response") for p in bad)


def test_openai_enum_rejected_falls_back_to_string_schema():
    with start_openai_server(max_enum=1000) as o:
        clf = openai(o, batch_size=1, concurrency=1)
        preds = clf.predict([PY, RECIPE])
        reqs = o.api_requests()
        strict = openai(o, schema="enum").predict([PY])
    assert all(p.labels for p in preds)
    assert clf.stats["schema_fallbacks"] == 1 and clf.info()["schema"] == "string"

    def path_schema(r):
        return r.json()["response_format"]["json_schema"]["schema"]["properties"]["items"]["items"][
            "properties"
        ]["categories"]["items"]["properties"]["path"]

    assert "enum" in path_schema(reqs[0]) and "enum" not in path_schema(reqs[-1])
    assert len(reqs) == 3  # one rejected, then one per text
    assert strict[0].error.startswith("api_error:invalid_json_schema")


def test_openai_threshold_and_empty_texts():
    with start_openai_server() as o:
        clf = openai(o, threshold=0.85)
        preds = clf.predict([PY, RECIPE, "", "   "])
        assert len(o.api_requests()) == 1
    assert preds[0].labels and preds[1].labels == []  # 0.8 < 0.85
    assert preds[2].error == preds[3].error == "empty"


def test_openai_redaction_and_no_text_in_errors(caplog):
    caplog.set_level(logging.DEBUG)
    secret = "python question from jane.doe@example.com card 4111 1111 1111 1111" + FILLER
    with start_openai_server() as o:
        o.fail_next("500")
        clf = openai(o, redact=True)
        (pred,) = clf.predict([secret])
        sent = o.api_requests()[-1].json()["messages"][1]["content"]
    assert pred.labels
    assert "jane.doe" not in sent and "4111" not in sent and "<CARD>" in sent
    assert_no_text([caplog.text], texts=[secret])


# --------------------------------------------------------------------------- shared


def test_retry_after_parsing_and_backoff():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") < 1  # in the past
    pol = RetryPolicy(backoff_base=0.1, backoff_max=1.0)
    assert all(0 <= pol.delay(a) <= min(1.0, 0.1 * 2**a) for a in range(8) for _ in range(20))
    assert pol.delay(0, retry_after=0.5) >= 0.5
    assert RetryPolicy(retry_after_max=2).delay(0, retry_after=999) <= 2


def test_token_bucket_limits_rate():
    bucket = TokenBucket(qps=50, burst=1)
    t0 = time.monotonic()
    for _ in range(11):
        bucket.acquire()
    assert time.monotonic() - t0 >= 0.18
    assert TokenBucket(qps=0).acquire() == 0.0


def test_map_concurrent_runs_in_parallel_and_keeps_failures():
    def work(x):
        time.sleep(0.1)
        if x == 3:
            raise ValueError("boom")
        return x * 2

    t0 = time.monotonic()
    out = map_concurrent(work, list(range(8)), concurrency=8)
    assert time.monotonic() - t0 < 0.5
    assert out[:3] == [0, 2, 4] and isinstance(out[3], ValueError) and out[7] == 14


def test_scrub_withholds_echoed_input():
    text = "my very secret prompt about a lawsuit against my employer"
    assert "withheld" in scrub(f"Could not parse: '{text[5:40]}'", [text])
    assert scrub("Invalid text content: too few tokens.", [text]).startswith("Invalid text")


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("text", "gone", "tag"),
    [
        ("write to jane.doe+work@mail.example.co.uk today", "jane.doe", "<EMAIL>"),
        ("call me on +1 (555) 123-4567 tonight", "123-4567", "<PHONE>"),
        ("my number is 020 7946 0958", "7946", "<PHONE>"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "3704", "<IBAN>"),
        ("IBAN GB82WEST12345698765432", "WEST1234", "<IBAN>"),
        ("card 4111-1111-1111-1111 exp 12/27", "4111", "<CARD>"),
        ("card 5500000000000004", "5500000000000004", "<CARD>"),
        ("server at 192.168.10.254 is down", "192.168", "<IP>"),
        ("v6 host 2001:db8:85a3::8a2e:370:7334 unreachable", "2001:db8", "<IP>"),
        ("loopback ::1 and fe80::1", "fe80::1", "<IP>"),
    ],
)
def test_regex_redaction(text, gone, tag):
    out = regex_redact(text)
    assert gone not in out and tag in out


@pytest.mark.parametrize(
    "text",
    [
        "meet on 2024-01-15 at 10:30",
        "version 3.11.7 released",
        "it costs 1,299 dollars for 12 items",
        "python list comprehension for x in range(10)",
    ],
)
def test_regex_redaction_keeps_ordinary_text(text):
    assert regex_redact(text) == text


def test_redactor_falls_back_to_regex_without_presidio():
    r = Redactor(engine="auto")
    try:
        import presidio_analyzer  # noqa: F401
    except ImportError:
        assert r.engine == "regex"
        with pytest.raises(RuntimeError, match="pii"):
            Redactor(engine="presidio")
    assert "<EMAIL>" in r.redact("x a@b.io y")
    assert Redactor(engine="regex").redact("") == ""


def test_configured_from_environment(monkeypatch):
    with start_google_server() as g, start_openai_server() as o:
        monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
        monkeypatch.setenv("TOKENCENSUS_GOOGLE_BASE_URL", g.base_url)
        monkeypatch.setenv("TOKENCENSUS_GOOGLE_API_VERSION", "v1")
        monkeypatch.setenv("TOKENCENSUS_REDACT", "1")
        gc = get_classifier("google", threshold=0.5)
        assert gc.predict([PY])[0].labels and gc.url.startswith(g.base_url + "/v1/")
        assert gc.redactor is not None
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", o.base_url + "/v1")
        monkeypatch.setenv("TOKENCENSUS_OPENAI_MODEL", "fake-2")
        monkeypatch.setenv("TOKENCENSUS_OPENAI_BATCH_SIZE", "3")
        oc = get_classifier("openai", threshold=0.5)
        assert oc.batch_size == 3 and oc.model == "fake-2"
        assert oc.predict([PY])[0].labels
        assert o.api_requests()[0].json()["model"] == "fake-2"


def test_describe_estimate_line():
    from tokencensus.classify.google import describe_estimate

    line = describe_estimate(estimate_cost([PY, SHORT] * 3, already_used=30_000))
    assert "6 texts -> 3 requests, 3 units" in line and "$0.01" in line
    assert "3 too short" in line and "cloud.google.com" in line


def test_backends_pickle_for_workers():
    import pickle

    with start_google_server() as g, start_openai_server() as o:
        gc = pickle.loads(pickle.dumps(google(g, redact=True, api_version="v1")))
        oc = pickle.loads(pickle.dumps(openai(o, batch_size=3)))
        assert gc.predict([PY])[0].labels and gc.model_id == "google-nl/v1/v2Model/V2+redact"
        assert oc.predict([PY])[0].labels and oc.batch_size == 3
