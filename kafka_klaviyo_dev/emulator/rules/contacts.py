"""Profiles' identifiers and contact data: what makes Klaviyo refuse (or ignore) a profile.

D3 e-mail validity and length, D4 an invalid phone (refused only when nothing else identifies
the profile, else ignored and named in ``X-Klaviyo-Partial-Failure``), E9 locale, E11 time zone,
E13 ``patch_properties`` values, and the channel rules of (un)subscribe: S10-S12 and U4.

Profile checks (:func:`~kafka_klaviyo_dev.emulator.limits.profile_check`) look only at the
item's profile: for events, once per profile group.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Iterator, Mapping
from typing import Any

from kafka_klaviyo_dev.emulator import limits
from kafka_klaviyo_dev.emulator import pointer as jp
from kafka_klaviyo_dev.emulator.items import Issue, Item
from kafka_klaviyo_dev.emulator.limits import CheckContext, enforces, profile_check

MAX_EMAIL_CHARS = 100  # "less than 100 characters"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_LOCALE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")
INVALID_PHONE = (
    "Invalid phone number format (Example of a valid phone number format: +12345678901)."
)
INVALID_EMAIL = "Invalid email address"
_EMPTY: Mapping[str, Any] = {}


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else _EMPTY


def _profile(item: Item) -> tuple[Mapping[str, Any], str] | None:
    """The item's profile attributes and their pointer (None for catalog items)."""
    if item.profile is None:
        return None
    base = item.profile_pointer or item.pointer
    return _dict(item.profile.get("attributes")), f"{base}/attributes"


def is_email(value: str) -> bool:
    """True for an e-mail address Klaviyo takes: one ``@``, a dotted domain, < 100 chars."""
    return len(value) < MAX_EMAIL_CHARS and _EMAIL.match(value) is not None


@profile_check
@enforces("D3")
def check_email(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """D3: a profile's ``email`` is a valid address of less than 100 characters."""
    found = _profile(item)
    if found is None:
        return
    attributes, where = found
    email = attributes.get("email")
    if not isinstance(email, str) or is_email(email):
        return
    if len(email) >= MAX_EMAIL_CHARS:
        detail = f"{INVALID_EMAIL}: it must be less than {MAX_EMAIL_CHARS} characters."
    else:
        detail = f"{INVALID_EMAIL}."
    yield Issue(f"{where}/email", detail)


def _other_identifier(profile: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    """Whether the profile is identified without its phone number."""
    email = attributes.get("email")
    if isinstance(email, str) and is_email(email):
        return True
    if profile.get("id"):
        return True
    if any(attributes.get(k) for k in ("external_id", "anonymous_id", "_kx")):
        return True
    push = _dict(_dict(attributes.get("subscriptions")).get("push"))
    return bool(push.get("anonymous_id"))


@profile_check
@enforces("D4")
def check_phone(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """D4 (with E8/P6/S12's E.164): an invalid ``phone_number`` fails the request only when
    it is the profile's sole identifier; beside another it is ignored, and the 202 says so in
    ``X-Klaviyo-Partial-Failure: phone_number``."""
    found = _profile(item)
    if found is None or item.profile is None:
        return
    attributes, where = found
    phone = attributes.get("phone_number")
    if not isinstance(phone, str) or limits.is_e164(phone):
        return
    if _other_identifier(item.profile, attributes):
        ctx.partial_failures.add("phone_number")
    else:
        yield Issue(f"{where}/phone_number", INVALID_PHONE)


@profile_check
@enforces("U6")
def check_unsubscribe_phone(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """U6: the phone number to unsubscribe is E.164 (no D4 leniency is documented here)."""
    yield from limits.check_phone(item, ctx)


@profile_check
@enforces("E9")
def check_locale(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """E9/P7: ``locale`` is a BCP 47 tag of the form ``ll`` or ``ll-CC`` (``en-US``)."""
    found = _profile(item)
    if found is None:
        return
    attributes, where = found
    locale = attributes.get("locale")
    if isinstance(locale, str) and not _LOCALE.match(locale):
        yield Issue(
            f"{where}/locale",
            "'locale' must be an IETF BCP 47 language tag like 'en' or 'en-US'.",
        )


@functools.lru_cache(maxsize=1024)
def is_time_zone(name: str) -> bool:
    """True if ``name`` is a time zone of the IANA database."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@profile_check
@enforces("E11")
def check_time_zone(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """E11/P7: ``location.timezone`` names an IANA time zone."""
    found = _profile(item)
    if found is None:
        return
    attributes, where = found
    zone = _dict(attributes.get("location")).get("timezone")
    if isinstance(zone, str) and not is_time_zone(zone):
        yield Issue(
            f"{where}/location/timezone",
            "'timezone' must be a time zone name of the IANA Time Zone Database.",
        )


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


@profile_check
@enforces("E13")
def check_patch_values(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """E13: ``meta.patch_properties.append``/``unappend`` values are simple values or
    arrays of them."""
    if item.profile is None:
        return
    base = item.profile_pointer or item.pointer
    patch = _dict(_dict(item.profile.get("meta")).get("patch_properties"))
    for operation in ("append", "unappend"):
        for name, value in _dict(patch.get(operation)).items():
            simple = _scalar(value) or (isinstance(value, list) and all(_scalar(v) for v in value))
            if not simple:
                yield Issue(
                    jp.join(base, ("meta", "patch_properties", operation, name)),
                    f"'{operation}' takes a simple value or an array of simple values.",
                )


def _channels(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    return _dict(attributes.get("subscriptions"))


@enforces("S10")
def check_subscriber_identified(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """S10: a profile to subscribe has ``email`` or ``phone_number`` (push-only profiles:
    ``subscriptions.push.anonymous_id``, S14)."""
    attributes = item.attributes
    if attributes.get("email") or attributes.get("phone_number"):
        return
    if _dict(_channels(attributes).get("push")).get("anonymous_id"):
        return
    yield Issue(
        f"{item.pointer}/attributes",
        "Either email or phone_number is required (push-only profiles: "
        "subscriptions.push.anonymous_id).",
    )


def _email_channel(item: Item) -> Iterator[Issue]:
    if "email" in _channels(item.attributes) and not item.attributes.get("email"):
        yield Issue(
            f"{item.pointer}/attributes/email",
            "'email' is required for the email channel.",
        )


def _phone_channels(item: Item) -> Iterator[Issue]:
    channels = _channels(item.attributes)
    for channel in ("sms", "whatsapp"):
        if channel in channels and not item.attributes.get("phone_number"):
            yield Issue(
                f"{item.pointer}/attributes/phone_number",
                f"'phone_number' is required for the {channel} channel.",
            )
            return  # one issue per pointer


@enforces("S11")
def check_subscribe_email(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """S11: subscribing the email channel needs ``email``."""
    yield from _email_channel(item)


@enforces("S12")
def check_subscribe_phone(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """S12: subscribing SMS or WhatsApp needs ``phone_number``."""
    yield from _phone_channels(item)


@enforces("U4")
def check_unsubscribe_channels(item: Item, ctx: CheckContext) -> Iterator[Issue]:
    """U4: unsubscribing the email channel needs ``email``; SMS or WhatsApp need
    ``phone_number``."""
    yield from _email_channel(item)
    yield from _phone_channels(item)
