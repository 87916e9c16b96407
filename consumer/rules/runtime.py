"""Helpers the generated translation code calls (the hot path inlines most things instead).

These are the parts of an output that are clearer as ordinary Python than as generated code:
null-safe access when the compiler cannot inline it, JSON conversion of Avro values, and the
assembly of subscription and catalog operations with their Klaviyo-specific rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from consumer.endpoints import Endpoint
from consumer.errors import TranslationError
from consumer.messages import Operation
from consumer.rules.functions import Where, rt_string

#: Marks a shared value not computed yet (None is a legitimate value).
UNSET: Any = object()

CATALOG_PREFIX = "$custom:::$default:::"
_IDENTIFIER_ORDER = ("email", "phone_number", "external_id", "anonymous_id", "_kx")
_CREATE_ONLY = frozenset({"external_id", "integration_type", "catalog_type"})


def get(value: Any, key: str) -> Any:
    """``value[key]``, or None when ``value`` is None."""
    return None if value is None else value[key]


def coalesce(first: Any, rest: Callable[[], Any]) -> Any:
    """``first`` unless it is None, else the (lazily computed) rest."""
    return first if first is not None else rest()


def zip_lists(lists: Sequence[Any], where: Where) -> Any:
    """Fan-out over several lists in lockstep; unequal lengths fail the message."""
    lists = [value if value is not None else () for value in lists]
    length = len(lists[0])
    if any(len(value) != length for value in lists):
        raise where.error("the for_each lists have different lengths")
    return zip(*lists, strict=True)


def template_part(value: Any, where: Where) -> str:
    """One template placeholder as text; a null one fails the message (ids must be whole)."""
    if value is None:
        raise where.error("a template placeholder is null")
    text = rt_string(value)
    assert text is not None
    return text


def order(op: str, left: Any, right: Any, where: Where) -> bool:
    """``left op right`` for < <= > >=; comparing with null fails the message."""
    if left is None or right is None:
        raise where.error(f"cannot compare null with {op}")
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def number_or_none(value: Any) -> float | None:
    """A Decimal (or number) as a JSON number, null kept."""
    return None if value is None else float(value)


def iso_or_none(value: Any) -> Any:
    """A timestamp or date as ISO 8601, null kept; text passes through."""
    return value.isoformat() if isinstance(value, datetime | date) else value


def jsonable(value: Any) -> Any:
    """A decoded Avro value with every Decimal, datetime and date made JSON-ready."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


def require_id(value: Any, where: Where) -> str:
    """An id (unique_id, external id) as text; null or empty fails the message."""
    if value is None or value == "":
        raise where.error("the id is null or empty")
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(f"an id must be text or an integer, not {type(value).__name__}")
    return str(value)


def no_identifier(where: Where) -> TranslationError:
    """The error for a profile left without any identifier."""
    return where.error(
        "the profile has no identifier (email, phone_number, external_id, anonymous_id and _kx"
        " are all empty)"
    )


def identity(profile: Mapping[str, Any]) -> str:
    """The identifier Klaviyo resolves a profile by, compared as Klaviyo compares it: e-mail
    addresses without regard to case, the others exactly (phone numbers are E.164 already)."""
    for key in _IDENTIFIER_ORDER:
        if key in profile:
            value = profile[key]
            if key == "email" and isinstance(value, str):
                value = value.strip().lower()
            return f"{key}:{value}"
    raise AssertionError("profiles are built with at least one identifier")


def subscription(
    action: Any,
    channel: Any,
    list_id: Any,
    email: Any,
    phone: Any,
    phone_error: TranslationError | None,
    consented_at: Any,
    where: Mapping[str, Where],
    list_only: bool = False,
) -> Operation:
    """One Subscribe or Unsubscribe item, grouped by list; the channel's identifier is required.

    ``list_only`` (rule ``unsubscribe_scope: list``) marks an unsubscribe to be sent only if
    the person is a member of the list (:mod:`consumer.deliver.membership`)."""
    kind = action.lower() if isinstance(action, str) else None
    if kind not in ("subscribe", "unsubscribe"):
        raise where["action"].error("action must be SUBSCRIBE or UNSUBSCRIBE")
    medium = channel.lower() if isinstance(channel, str) else None
    if medium not in ("email", "sms"):
        raise where["channel"].error("channel must be EMAIL or SMS")
    if not isinstance(list_id, str) or not list_id:
        raise where["list_id"].error("the list id is null or empty")
    # Only the channel's own identifier goes in: Klaviyo reads the subscription off the
    # identifier, and an extra one could attach the consent to a different profile.
    attributes: dict[str, Any] = {}
    if medium == "email":
        if not isinstance(email, str) or not email:
            raise where["email"].error("an email subscription needs an email address")
        attributes["email"] = email
    elif phone:
        attributes["phone_number"] = phone
    else:
        # The number is this channel's identifier: a bad one is bad data, not something to drop.
        if phone_error is not None:
            raise phone_error
        raise where["phone_number"].error("an SMS subscription needs a phone number")
    consent: dict[str, Any]
    if kind == "subscribe":
        consent = {"consent": "SUBSCRIBED"}
        if consented_at is not None:
            consent["consented_at"] = consented_at
        endpoint = Endpoint.SUBSCRIBE
    else:
        consent = {"consent": "UNSUBSCRIBED"}
        endpoint = Endpoint.UNSUBSCRIBE
    attributes["subscriptions"] = {medium: {"marketing": consent}}
    key = identity(attributes)
    return Operation(
        endpoint,
        {"attributes": attributes},
        (list_id, medium, key),
        list_id,
        list_only=list_only and endpoint is Endpoint.UNSUBSCRIBE,
    )


def catalog_item(
    mode: str,
    external_id: str,
    attributes: dict[str, Any],
    categories: Any,
    where: Mapping[str, Where],
) -> list[Operation]:
    """Catalog item create, update, or ``upsert``.

    Klaviyo has no bulk upsert. ``upsert`` updates the item, carrying the full item to create
    as its fallback: the create is sent only for items the update job reports missing
    (:mod:`consumer.deliver.jobs`), so an upsert of an item that exists costs one item write.
    """
    for key in ("title", "description", "url"):
        if mode != "update" and not isinstance(attributes.get(key), str):
            raise where[key].error(f"Klaviyo requires the item's {key}")
    item_id = CATALOG_PREFIX + external_id
    relationships: dict[str, Any] | None = None
    if categories is not None:
        relationships = {
            "categories": {
                "data": [
                    {"type": "catalog-category", "id": CATALOG_PREFIX + str(name)}
                    for name in categories
                    if name is not None and name != ""
                ]
            }
        }
    dedup_key = (item_id,)
    create: dict[str, Any] | None = None
    if mode in ("create", "upsert"):
        create = {
            "attributes": {
                "external_id": external_id,
                "integration_type": "$custom",
                "catalog_type": "$default",
                **attributes,
            }
        }
        if relationships is not None:
            create["relationships"] = relationships
        if mode == "create":
            return [Operation(Endpoint.CATALOG_CREATE, create, dedup_key)]
    update = {k: v for k, v in attributes.items() if k not in _CREATE_ONLY}
    payload: dict[str, Any] = {"id": item_id, "attributes": update}
    if relationships is not None:
        payload["relationships"] = relationships
    return [Operation(Endpoint.CATALOG_UPDATE, payload, dedup_key, fallback=create)]


def catalog_delete(external_id: str) -> Operation:
    """One catalog item delete."""
    item_id = CATALOG_PREFIX + external_id
    return Operation(Endpoint.CATALOG_DELETE, {"id": item_id}, (item_id,))


#: Names the generated code sees (besides its own constants).
NAMESPACE: dict[str, Any] = {
    "_U": UNSET,
    "_get": get,
    "_co": coalesce,
    "_zip": zip_lists,
    "_tpl": template_part,
    "_order": order,
    "_num": number_or_none,
    "_iso": iso_or_none,
    "_json": jsonable,
    "_req_id": require_id,
    "_no_id": no_identifier,
    "_identity": identity,
    "_subscription": subscription,
    "_catalog_item": catalog_item,
    "_catalog_delete": catalog_delete,
    "_TE": TranslationError,
}
