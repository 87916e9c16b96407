"""Masking of personal data (e-mail addresses, phone numbers) and secrets in text.

Used for log lines and for the ``dlq.error.message`` header: whatever a third party put in an
error message, what we print or store keeps only enough to recognise the value.
"""

from __future__ import annotations

import re

# Characters that cannot be part of an address as it appears in text, JSON or a log line.
_STOP = r"\s@\"'<>()\[\]{},;:\\"
# Any script (internationalised addresses: "jöhn@exämple.de"), punycode domains too.
_EMAIL = re.compile(
    rf"([^{_STOP}])[^{_STOP}]*@(?:[^{_STOP}.]+\.)+(?:xn--[\w-]+|[^\W\d_]{{2,}})"
)
# Seven or more digits, allowing the separators people type; keeps the last two digits.
# Not inside a word, a topic name or an offset ("orders-4f03617", "[2]@1234567"), and not a
# date: a revision "2026-07-15" or a timestamp must stay readable, including the seconds of a
# time of day and their fraction ("19:00:07.123456"; a "tel:" URI's number has no such dot).
_PHONE = re.compile(
    r"(?<![\w@\[\]-])(?<!\d\.)(?!\d{4}-\d\d-\d\d)(?!(?<=:)\d\d\.\d)"
    r"\+?\d[\d\s().-]{5,}\d(?![\w-])"
)
# Everything after the prefix up to a separator: keys may hold "-", "." or "_".
_API_KEY = re.compile(r"(pk_|Klaviyo-API-Key\s+)[^\s\"',;]+", re.IGNORECASE)


def mask(text: str) -> str:
    """``text`` with e-mail addresses, phone numbers and API keys masked."""
    text = _API_KEY.sub(lambda m: f"{m.group(1)}***", text)
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@***", text)
    return _PHONE.sub(_mask_phone, text)


def _mask_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if len(digits) < 7:
        return text
    return "***" + digits[-2:]
