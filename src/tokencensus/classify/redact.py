"""Optional PII redaction before text leaves the machine.

:class:`Redactor` replaces personal data with placeholders such as
``<EMAIL>``. It uses Microsoft Presidio (``pip install tokencensus[pii]``,
which brings ``presidio-analyzer``; Presidio also needs a spaCy model such as
``en_core_web_lg``) when that is installed and loads, and otherwise a
documented regular-expression fallback that finds:

* e-mail addresses -> ``<EMAIL>``
* IBANs (two letters, two check digits, 11-30 alphanumerics, spaces allowed)
  -> ``<IBAN>``
* card-like numbers (13-19 digits, optionally grouped by spaces or dashes;
  no Luhn check, so some other long numbers go too) -> ``<CARD>``
* IPv4 and IPv6 addresses -> ``<IP>``
* phone numbers (9-15 digits, optional ``+``, spaces, dots, dashes and
  brackets between them; bare 8-digit dates and short numbers are kept)
  -> ``<PHONE>``

The fallback favours recall for these shapes and knows nothing of names or
street addresses: it is a safety net, not a guarantee. The Google and
OpenAI-compatible backends apply a redactor to each text before sending it
when built with ``redact=True`` (or with a :class:`Redactor`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("tokencensus.classify.redact")

_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w.])")
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w.])"
)
_IPV6 = re.compile(
    r"(?<![\w:])(?:"
    r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
    r"|(?:[0-9A-Fa-f]{1,4}:){1,7}:"
    r"|(?:[0-9A-Fa-f]{1,4}:){1,6}(?::[0-9A-Fa-f]{1,4}){1,6}"
    r"|::(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4}"
    r")(?![\w:])"
)
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d(?:[\s().-]{0,2}\d){8,14}(?![\w])")

#: The fallback's rules, applied in this order (most specific first).
REGEX_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("EMAIL", _EMAIL),
    ("IBAN", _IBAN),
    ("IP", _IPV4),
    ("IP", _IPV6),
    ("CARD", _CARD),
    ("PHONE", _PHONE),
]

#: Presidio entity -> placeholder name.
_PRESIDIO_NAMES = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP",
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
    "US_SSN": "SSN",
}


def regex_redact(text: str) -> str:
    """The fallback: replace e-mails, IBANs, IPs, card-like and phone numbers."""
    for name, rx in REGEX_RULES:
        text = rx.sub(f"<{name}>", text)
    return text


class Redactor:
    """Replaces PII in text with ``<KIND>`` placeholders.

    ``engine="auto"`` uses Presidio when it imports and its NLP model loads,
    else the regex fallback; ``"presidio"`` insists on Presidio (raises if
    missing); ``"regex"`` never tries it. The regex pass also runs after
    Presidio, as a second net.
    """

    def __init__(
        self,
        engine: str = "auto",
        *,
        language: str = "en",
        entities: Sequence[str] | None = None,
        score_threshold: float = 0.4,
    ) -> None:
        if engine not in ("auto", "presidio", "regex"):
            raise ValueError(f"unknown redaction engine {engine!r}")
        self.language = language
        self.entities = list(entities) if entities else list(_PRESIDIO_NAMES)
        self.score_threshold = score_threshold
        self._analyzer: Any = None
        self.engine = "regex"
        if engine != "regex":
            self._analyzer = self._load_presidio(required=engine == "presidio")
            if self._analyzer is not None:
                self.engine = "presidio"

    @staticmethod
    def _load_presidio(required: bool) -> Any:
        try:
            from presidio_analyzer import AnalyzerEngine  # type: ignore[import-not-found]

            return AnalyzerEngine()
        except Exception as exc:  # ImportError, or a missing spaCy model
            if required:
                raise RuntimeError(
                    "Presidio redaction requested but unavailable "
                    "(pip install 'tokencensus[pii]' and a spaCy model)"
                ) from exc
            log.info("presidio unavailable (%s); using regex redaction", type(exc).__name__)
            return None

    def redact(self, text: str) -> str:
        """``text`` with its PII replaced."""
        if not text:
            return text
        if self._analyzer is not None:
            results = self._analyzer.analyze(
                text=text,
                language=self.language,
                entities=self.entities,
                score_threshold=self.score_threshold,
            )
            # Replace from the end so earlier offsets stay valid; skip overlaps.
            last_start = len(text) + 1
            for r in sorted(results, key=lambda r: (r.start, -r.end), reverse=True):
                if r.end > last_start:
                    continue
                name = _PRESIDIO_NAMES.get(r.entity_type, r.entity_type)
                text = text[: r.start] + f"<{name}>" + text[r.end :]
                last_start = r.start
        return regex_redact(text)

    __call__ = redact

    def __repr__(self) -> str:
        return f"Redactor(engine={self.engine!r})"


def make_redactor(redact: bool | Redactor | None) -> Redactor | None:
    """``True`` -> a default :class:`Redactor`; a redactor as is; falsy -> ``None``."""
    if isinstance(redact, Redactor):
        return redact
    return Redactor() if redact else None


def picklable_redact(redactor: Redactor | None) -> bool | Redactor:
    """What a backend's pickled settings keep of its redactor.

    A regex redactor travels as is; a Presidio one (whose engine does not
    pickle) as ``True``, rebuilt on the other side.
    """
    if redactor is None:
        return False
    return redactor if redactor.engine == "regex" else True
