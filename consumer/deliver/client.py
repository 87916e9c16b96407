"""The Klaviyo HTTP client: bulk POSTs, job GETs and category creates, answers translated to
typed errors.

This is the only module that touches httpx. Everything that goes wrong on the wire leaves it
as a :mod:`consumer.errors` type:

- 408, 429, 5xx, timeouts, connection errors: TransientDeliveryError (retry, honour
  Retry-After);
- 401, 403: AuthenticationError (stop);
- 413: PayloadTooLargeError (split the batch);
- 404, 405, 406, 415, and any other 4xx whose errors carry no ``source.pointer`` (they name a
  request parameter such as the revision, or nothing): RequestRejectedError (stop, nothing
  dead-lettered: no item is to blame);
- any other 4xx: BadRequestError, whose pointers the sender maps back to the items.

The API key is sent in a header and never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from consumer.endpoints import Endpoint
from consumer.errors import (
    AuthenticationError,
    BadRequestError,
    PayloadTooLargeError,
    RequestRejectedError,
    TransientDeliveryError,
)

_RETRYABLE_STATUS = frozenset({408, 429})
# Answers about the request, never about its items: wrong path, method, media type.
_REQUEST_STATUS = frozenset({404, 405, 406, 415})


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """Klaviyo's ``RateLimit-*`` response headers: the account-wide budget left."""

    limit: int | None
    remaining: int | None
    reset_s: float | None


@dataclass(frozen=True, slots=True)
class Answer:
    """A 2xx answer: its status, its JSON document (None when empty) and its rate-limit
    headers."""

    status: int
    document: dict[str, Any] | None
    rate_limit: RateLimitState

    @property
    def job_id(self) -> str | None:
        """The id of the job a bulk POST started (``data.id``), if the answer names one."""
        data = self.document.get("data") if self.document is not None else None
        job_id = data.get("id") if isinstance(data, dict) else None
        return job_id if isinstance(job_id, str) and job_id else None


class KlaviyoClient:
    """Posts bulk bodies to one Klaviyo account (one API key)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: SecretStr,
        revision: str,
        timeout_s: float,
        max_connections: int = 8,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url,
            headers={
                "Authorization": f"Klaviyo-API-Key {api_key.get_secret_value()}",
                "revision": revision,
                "Content-Type": "application/vnd.api+json",
                "Accept": "application/vnd.api+json",
            },
            timeout=timeout_s,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    def post(self, endpoint: Endpoint, body: bytes) -> Answer:
        """POST one bulk body; returns the 2xx answer (a job endpoint's names its job)."""
        return self.request("POST", endpoint.spec.path, content=body)

    def get(self, path: str, params: dict[str, str] | None = None) -> Answer:
        """GET a job's status or its errors (``path`` relative to the base URL)."""
        return self.request("GET", path, params=params)

    def create(self, path: str, body: bytes, *, exists_ok: bool = True) -> Answer:
        """POST one resource (a catalog category); with ``exists_ok`` a 409 (it exists
        already) is an answer, not an error."""
        return self.request("POST", path, content=body, conflict_ok=exists_ok)

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        conflict_ok: bool = False,
    ) -> Answer:
        """One request; anything but a 2xx (or an allowed 409) leaves as a typed error."""
        what = f"{method} {path}"
        try:
            response = self._client.request(method, path, content=content, params=params)
        except httpx.TimeoutException as exc:
            raise TransientDeliveryError(f"{what}: timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientDeliveryError(
                f"{what}: connection failed ({type(exc).__name__})"
            ) from exc
        status = response.status_code
        if status < 300 or (status == 409 and conflict_ok):
            return Answer(status, _document(response), _rate_limit_state(response.headers))
        if status in _RETRYABLE_STATUS or status >= 500:
            raise TransientDeliveryError(
                f"{what}: HTTP {status}",
                http_status=status,
                retry_after=_retry_after(response.headers),
            )
        if status in (401, 403):
            raise AuthenticationError(
                f"Klaviyo refused the API key (HTTP {status} on {path}): "
                f"{_first_detail(response)}; check KLAVIYO_API_KEY and its scopes"
            )
        if status == 413:
            raise PayloadTooLargeError(f"{what}: HTTP 413, the body is too large")
        errors = _errors(response)
        if status in _REQUEST_STATUS or not any(_pointer(error) for error in errors):
            # Nothing in the answer names an item: the request itself is wrong (a revision
            # Klaviyo does not serve, a wrong base URL, a media type it does not take).
            raise RequestRejectedError(
                f"Klaviyo refused the request as a whole (HTTP {status} on {path}): "
                f"{_describe(errors)}",
                http_status=status,
            )
        raise BadRequestError(f"{what}: HTTP {status}", http_status=status, errors=errors)

    def close(self) -> None:
        self._client.close()


def _retry_after(headers: httpx.Headers) -> float | None:
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # An HTTP-date; Klaviyo sends seconds, so fall back to our backoff.


def _rate_limit_state(headers: httpx.Headers) -> RateLimitState:
    def number(name: str) -> float | None:
        raw = headers.get(name)
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None

    limit, remaining = number("RateLimit-Limit"), number("RateLimit-Remaining")
    return RateLimitState(
        int(limit) if limit is not None else None,
        int(remaining) if remaining is not None else None,
        number("RateLimit-Reset"),
    )


def _document(response: httpx.Response) -> dict[str, Any] | None:
    if not response.content:
        return None
    try:
        document = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _errors(response: httpx.Response) -> list[dict[str, object]]:
    document = _document(response)
    errors = document.get("errors") if document is not None else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _pointer(error: dict[str, object]) -> str | None:
    """The error's ``source.pointer`` (a place in the body), if it has one."""
    source = error.get("source")
    pointer = source.get("pointer") if isinstance(source, dict) else None
    return pointer if isinstance(pointer, str) and pointer else None


def _describe(errors: list[dict[str, object]]) -> str:
    """Klaviyo's first error as one line: its detail, and the parameter it names."""
    if not errors:
        return "no error details in the answer (check klaviyo.base_url and klaviyo.revision)"
    first = errors[0]
    text = str(first.get("detail") or first.get("title") or first.get("code") or "no detail")
    source = first.get("source")
    parameter = source.get("parameter") if isinstance(source, dict) else None
    return f"{text} (parameter {parameter})" if parameter else text


def _first_detail(response: httpx.Response) -> str:
    errors = _errors(response)
    if errors:
        return str(errors[0].get("detail") or errors[0].get("title") or "no detail")
    return "no detail"
