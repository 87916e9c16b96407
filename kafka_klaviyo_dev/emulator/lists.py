"""Get Profiles for List (``GET /api/lists/{id}/profiles``) answered from the consent state.

A person is a member of a list while their last consent on it (any channel their identifier
names: e-mail for ``email``, SMS and WhatsApp for ``phone_number``) is ``SUBSCRIBED``, as
:mod:`kafka_klaviyo_dev.emulator.final_state` works it out from what was accepted; an
Unsubscribe removes them (RULES.md U5). Only the spec's identifier filters are served:
``any(email,[...])``, ``equals(email,"...")`` and the same for ``phone_number`` (quotes single
or double); e-mail addresses match without regard to case, phone numbers exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from kafka_klaviyo_dev.emulator import jobs as jb

_FILTER = re.compile(r"^\s*(any|equals)\(\s*(email|phone_number)\s*,\s*(.*?)\s*\)\s*$", re.S)
_QUOTED = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\s*""", re.S)


class FilterError(ValueError):
    """A ``filter`` the emulator does not serve (the message says which forms it takes)."""


def parse_filter(text: str | None) -> tuple[str, set[str]] | None:
    """(field, the values it names, compared as Klaviyo compares them); None for no filter."""
    if text is None:
        return None
    match = _FILTER.match(text)
    if match is None:
        raise FilterError(
            'The emulator serves filter=any(email,[...]) or equals(email,"...") (or'
            f" phone_number) on this endpoint, not {text[:80]!r}."
        )
    operator, field, raw = match.groups()
    values = _strings(raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw)
    if operator == "equals" and len(values) != 1:
        raise FilterError("equals() takes one value.")
    return field, {_comparable(field, value) for value in values}


def _strings(raw: str) -> list[str]:
    out: list[str] = []
    at = 0
    while at < len(raw):
        match = _QUOTED.match(raw, at)
        if match is None:
            raise FilterError(f"Not a quoted string at {raw[at : at + 40]!r} of the filter.")
        double, single = match.groups()
        quoted = double if double is not None else single
        out.append(orjson.loads(f'"{quoted}"') if double is not None else quoted)
        at = match.end()
        if at < len(raw):
            if raw[at] != ",":
                raise FilterError("Values of a filter list are separated by commas.")
            at += 1
    return out


def _comparable(field: str, value: str) -> str:
    value = value.strip()
    return value.lower() if field == "email" else value


def members(
    consent: Iterable[Mapping[str, Any]], list_id: str, wanted: tuple[str, set[str]] | None
) -> list[dict[str, Any]]:
    """The list's members (optionally only those ``wanted`` names) as profile resources."""
    field, values = wanted if wanted is not None else (None, None)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in consent:
        if entry.get("list_id") != list_id or entry.get("consent") != "SUBSCRIBED":
            continue
        channel = str(entry.get("channel"))
        identifier = "email" if channel == "email" else "phone_number"
        if field is not None and identifier != field:
            continue
        person = str(entry.get("person"))
        if values is not None and person not in values:
            continue
        found.setdefault((identifier, person), _resource(identifier, person, entry))
    return list(found.values())


def _resource(identifier: str, person: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {"email": None, "phone_number": None}
    attributes[identifier] = person
    # The time of the Subscribe that made them a member (the entry's last change).
    joined = entry.get("updated_at")
    moment = datetime.fromtimestamp(float(joined), UTC) if joined else datetime.now(UTC)
    attributes["joined_group_at"] = moment.isoformat()
    return {"type": "profile", "id": f"{identifier}:{person}", "attributes": attributes}


def document(
    resources: list[dict[str, Any]],
    url: str,
    query: Mapping[str, str],
    size: int,
    cursor: str | None,
) -> dict[str, Any]:
    """One page of ``resources`` with ``links`` whose query is URL-encoded (filters hold
    quotes, commas and ``+``)."""
    offset = jb.decode_cursor(cursor)
    chunk = resources[offset : offset + size]

    def link(at: int) -> str:
        params = {k: v for k, v in query.items() if k != "page[cursor]"}
        if at:
            params["page[cursor]"] = jb.encode_cursor(at)
        return url + ("?" + urlencode(params) if params else "")

    links = {"self": link(offset)}
    if offset + size < len(resources):
        links["next"] = link(offset + size)
    if offset > 0:
        links["prev"] = link(max(0, offset - size))
    base = url.rsplit("/lists/", 1)[0]
    data = [r | {"links": {"self": f"{base}/profiles/{r['id']}/"}} for r in chunk]
    return {"data": data, "links": links}
