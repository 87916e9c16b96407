"""Klaviyo-shaped responses: the JSON:API error document and the transport-neutral Response.

Every error the emulator answers with, whatever the cause, has Klaviyo's shape::

    {"errors": [{"id": "<uuid>", "status": 400, "code": "invalid", "title": "Invalid input.",
                 "detail": "...", "source": {"pointer": "/data/attributes/..."}}]}

Codes and titles follow Klaviyo's (Django REST framework) vocabulary. Details never contain
the values that failed, because those may be e-mail addresses or phone numbers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson

JSON_API = "application/vnd.api+json"

#: status -> (code, title) for errors that carry no more specific code.
_DEFAULTS: Mapping[int, tuple[str, str]] = {
    400: ("invalid", "Invalid input."),
    401: ("not_authenticated", "Authentication credentials were not provided."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    408: ("request_timeout", "Request timed out."),
    409: ("conflict", "Conflict."),
    413: ("request_too_large", "Request entity too large."),
    415: ("unsupported_media_type", "Unsupported media type."),
    429: ("throttled", "Request was throttled."),
    500: ("error", "A server error occurred."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "Service temporarily unavailable."),
    504: ("gateway_timeout", "Gateway timeout."),
}


@dataclass(frozen=True, slots=True)
class ApiError:
    """One entry of the ``errors`` array; ``pointer`` xor ``parameter`` names the source."""

    status: int
    detail: str
    code: str | None = None
    title: str | None = None
    pointer: str | None = None
    parameter: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON:API error object with a fresh id, as Klaviyo sends it."""
        code, title = _DEFAULTS.get(self.status, _fallback(self.status))
        source: dict[str, str] = {}
        if self.pointer is not None:
            source["pointer"] = self.pointer
        elif self.parameter is not None:
            source["parameter"] = self.parameter
        else:
            source["pointer"] = "/data/"
        return {
            "id": str(uuid.uuid4()),
            "status": self.status,
            "code": self.code or code,
            "title": self.title or title,
            "detail": self.detail,
            "source": source,
            "links": {},
            "meta": {},
        }


def _fallback(status: int) -> tuple[str, str]:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return ("error" if status >= 500 else "invalid", f"{phrase}.")


@dataclass(slots=True)
class Response:
    """What the HTTP layer writes back; ``drop`` closes the connection without an answer."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


def error_response(
    status: int, errors: Iterable[ApiError], headers: Mapping[str, str] | None = None
) -> Response:
    """A Klaviyo error document with ``status``."""
    document = {"errors": [e.to_json() for e in errors]}
    out = {"Content-Type": JSON_API}
    out.update(headers or {})
    return Response(status, orjson.dumps(document), out)


def single_error(
    status: int,
    detail: str,
    *,
    code: str | None = None,
    title: str | None = None,
    pointer: str | None = None,
    parameter: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A Klaviyo error document with one error."""
    error = ApiError(status, detail, code, title, pointer, parameter)
    return error_response(status, [error], headers)


def json_response(status: int, document: Any, content_type: str = "application/json") -> Response:
    """A JSON body (control API and job documents)."""
    return Response(
        status,
        orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS),
        {"Content-Type": content_type},
    )


def empty(status: int, headers: Mapping[str, str] | None = None) -> Response:
    """A body-less answer such as Bulk Create Events' 202."""
    return Response(status, b"", dict(headers or {}))


def invalid(issues: Sequence[tuple[str, str]], title: str = "Invalid input.") -> Response:
    """400 with one ``invalid`` error per (pointer, detail)."""
    return error_response(
        400, [ApiError(400, detail, "invalid", title, pointer) for pointer, detail in issues]
    )
