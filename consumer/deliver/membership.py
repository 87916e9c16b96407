"""Who of an Unsubscribe batch is in its list: asked of Klaviyo before a list-only unsubscribe.

Klaviyo's Unsubscribe call unsubscribes a person who is not in the given list from every list
(RULES.md U1). A rule with ``unsubscribe_scope: list`` wants only the list's members
unsubscribed, so before such a batch (at most 100 people) is posted the sender asks Get
Profiles for List for the people of the batch (``filter=any(email,[...])``, or
``phone_number`` for SMS, ``page[size]=100``) and sends only the members. E-mail addresses are
matched without regard to case, as Klaviyo matches them; phone numbers (E.164) exactly.

The GET goes through ``Sender.call``: outages and 429s are retried like a bulk POST, so a
membership check never dead-letters anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import orjson

from consumer.batch import BatchEntry
from consumer.deliver.client import Answer, KlaviyoClient

PATH = "/api/lists/{id}/profiles"
# Klaviyo's limits of Get Profiles for List (x-klaviyo-ratelimit), without predictive fields.
BURST_PER_SECOND = 75
STEADY_PER_MINUTE = 750
# The spec's largest page; an Unsubscribe batch holds at most 100 people, so one page is usual.
PAGE_SIZE = 100
# Characters of identifiers per filter: keeps the URL far below common server limits (8 KB)
# even for long addresses; a batch of usual addresses needs one request.
MAX_FILTER_CHARS = 4000

# (account, the request, cancelled) -> the answer; retried through outages (Sender.call).
Call = Callable[[str, Callable[[KlaviyoClient], Answer], threading.Event], Answer]


@dataclass(frozen=True, slots=True)
class Person:
    """The identifier an Unsubscribe item names a person by: the filter field and its value."""

    field: str  # email | phone_number
    value: str

    @property
    def match_key(self) -> tuple[str, str]:
        """Compared as Klaviyo compares it: e-mail addresses in lower case."""
        value = self.value.strip()
        return (self.field, value.lower() if self.field == "email" else value)


def person_of(entry: BatchEntry) -> Person | None:
    """The person an Unsubscribe entry names (its ``email``, else its ``phone_number``)."""
    resource = orjson.loads(entry.item.json)
    attributes = resource.get("attributes") if isinstance(resource, dict) else None
    if not isinstance(attributes, dict):
        return None
    for field in ("email", "phone_number"):
        value = attributes.get(field)
        if isinstance(value, str) and value:
            return Person(field, value)
    return None


def filter_for(field: str, values: Sequence[str]) -> str:
    """Klaviyo's filter naming any of ``values`` in ``field``: ``any(email,["a@x","b@y"])``.

    The values are JSON strings, so a quote or backslash in one cannot end it early."""
    return f"any({field},{orjson.dumps(list(values)).decode()})"


def chunks(values: Sequence[str], max_chars: int = MAX_FILTER_CHARS) -> list[list[str]]:
    """``values`` cut into runs of at most ``PAGE_SIZE`` whose filter stays near ``max_chars``."""
    out: list[list[str]] = []
    run: list[str] = []
    size = 0
    for value in values:
        cost = len(value) + 3  # quotes and comma
        if run and (len(run) >= PAGE_SIZE or size + cost > max_chars):
            out.append(run)
            run, size = [], 0
        run.append(value)
        size += cost
    if run:
        out.append(run)
    return out


def params_for(field: str, values: Sequence[str]) -> dict[str, str]:
    """The query of the first page: the filter, only the identifier fields, the largest page."""
    return {
        "filter": filter_for(field, values),
        "fields[profile]": field,
        "page[size]": str(PAGE_SIZE),
    }


def members_in(document: dict[str, object] | None, field: str) -> set[tuple[str, str]]:
    """The match keys of the profiles a page of Get Profiles for List names."""
    data = document.get("data") if document is not None else None
    found: set[tuple[str, str]] = set()
    for resource in data if isinstance(data, list) else ():
        attributes = resource.get("attributes") if isinstance(resource, dict) else None
        value = attributes.get(field) if isinstance(attributes, dict) else None
        if isinstance(value, str) and value:
            found.add(Person(field, value).match_key)
    return found


def next_page(document: dict[str, object] | None) -> dict[str, str] | None:
    """The query of the next page (``links.next``), or None on the last page."""
    links = document.get("links") if document is not None else None
    link = links.get("next") if isinstance(links, dict) else None
    if not isinstance(link, str) or not link:
        return None
    return dict(parse_qsl(urlsplit(link).query, keep_blank_values=True))


class Membership:
    """Splits a list-only Unsubscribe batch into the list's members and the rest."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def split(
        self,
        account: str,
        list_id: str,
        entries: list[BatchEntry],
        cancelled: threading.Event,
    ) -> tuple[list[BatchEntry], list[BatchEntry]]:
        """(members, non-members) of ``entries`` in ``list_id``, each in the entries' order.
        Blocks through outages (DeliveryAborted when cancelled); a refusal propagates."""
        people = [person_of(entry) for entry in entries]
        by_field: dict[str, list[str]] = {}
        for person in people:
            if person is not None:
                values = by_field.setdefault(person.field, [])
                if person.value not in values:
                    values.append(person.value)
        members: set[tuple[str, str]] = set()
        path = PATH.format(id=list_id)
        for field, values in by_field.items():
            for run in chunks(values):
                members |= self._members(account, path, field, run, cancelled)
        inside, outside = [], []
        for entry, person in zip(entries, people, strict=True):
            # An entry without an identifier cannot be looked up: Klaviyo decides (it refuses
            # it, RULES.md U4), as it would without the check.
            if person is None or person.match_key in members:
                inside.append(entry)
            else:
                outside.append(entry)
        return inside, outside

    def _members(
        self,
        account: str,
        path: str,
        field: str,
        values: list[str],
        cancelled: threading.Event,
    ) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        params: dict[str, str] | None = params_for(field, values)
        while params is not None:
            answer = self._call(account, _get(path, params), cancelled)
            found |= members_in(answer.document, field)
            params = next_page(answer.document)
        return found


def _get(path: str, params: dict[str, str]) -> Callable[[KlaviyoClient], Answer]:
    """The request of one page (bound now: the caller's loop moves on to the next page)."""
    return lambda client: client.get(path, params)
