"""Masking of personal data (e-mail addresses, phone numbers) and secrets in text.

Used for log lines and for the ``dlq.error.message`` header: whatever a third party put in an
error message, what we print or store keeps only enough to recognise the value.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
# Seven or more digits, allowing the separators people type; keeps the last two digits.
# Not inside a word, a topic name or an offset ("orders-4f03617", "[2]@1234567").
_PHONE = re.compile(r"(?<![\w@\[\]-])\+?\d[\d\s().-]{5,}\d(?![\w-])")
_API_KEY = re.compile(r"\b(pk_|Klaviyo-API-Key\s+)[A-Za-z0-9_]+")


def mask(text: str) -> str:
    """``text`` with e-mail addresses, phone numbers and API keys masked."""
    text = _API_KEY.sub(lambda m: f"{m.group(1)}***", text)
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@***", text)
    return _PHONE.sub(_mask_phone, text)


def _mask_phone(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if len(digits) < 7:
        return match.group(0)
    return "***" + digits[-2:]
