"""Phone numbers to E.164, with libphonenumber's validity check, cached.

Parsing is most of a translation's cost and customers repeat, so each verdict is remembered
(a bounded LRU). Used by the hand-written translation and by the translation rules' ``e164()``.
"""

from __future__ import annotations

import functools

import phonenumbers

NOT_PARSABLE = "phone number cannot be parsed"
NOT_VALID = "phone number is not a valid number"


@functools.lru_cache(maxsize=65_536)
def to_e164(value: str, region: str) -> tuple[str | None, str | None]:
    """(E.164 number, None) or (None, why not) for ``value`` read in default ``region``."""
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None, NOT_PARSABLE
    if not phonenumbers.is_valid_number(parsed):
        return None, NOT_VALID
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None
