"""KlaviyoClient.post turns every answer and transport failure into one typed outcome."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from consumer.deliver.client import KlaviyoClient, RateLimitState
from consumer.endpoints import Endpoint
from consumer.errors import (
    AuthenticationError,
    BadRequestError,
    PayloadTooLargeError,
    RequestRejectedError,
    TransientDeliveryError,
)

API_KEY = "pk_0123456789abcdefSECRET"
REVISION = "2026-07-15"
BODY = b'{"data":{"type":"event-bulk-create-job","attributes":{}}}'

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler) -> KlaviyoClient:
    return KlaviyoClient(
        base_url="https://klaviyo.test",
        api_key=SecretStr(API_KEY),
        revision=REVISION,
        timeout_s=5.0,
        transport=httpx.MockTransport(handler),
    )


def _answer(status: int, document: Any = None, **headers: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        content = orjson.dumps(document) if document is not None else b""
        return httpx.Response(status, content=content, headers=headers)

    return handler


def _error(status: int, detail: str, **source: str) -> dict[str, Any]:
    error: dict[str, Any] = {
        "id": "3f0c7a52-0000-4000-8000-000000000000",
        "status": status,
        "code": "invalid",
        "title": "Invalid input.",
        "detail": detail,
    }
    if source:
        error["source"] = source
    return error


def _post(handler: Handler) -> RateLimitState:
    client = _client(handler)
    try:
        return client.post(Endpoint.EVENTS, BODY).rate_limit
    finally:
        client.close()


# -- 2xx -------------------------------------------------------------------------------------


def test_accepted_answer_returns_the_parsed_rate_limit_headers() -> None:
    handler = _answer(
        202, None, **{"RateLimit-Limit": "10", "RateLimit-Remaining": "3", "RateLimit-Reset": "7"}
    )
    assert _post(handler) == RateLimitState(limit=10, remaining=3, reset_s=7.0)


def test_accepted_answer_without_rate_limit_headers_reports_none() -> None:
    assert _post(_answer(202)) == RateLimitState(limit=None, remaining=None, reset_s=None)


def test_request_carries_key_revision_json_api_type_and_the_body_as_given() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    _post(handler)
    (request,) = seen
    assert request.method == "POST"
    assert request.url == httpx.URL("https://klaviyo.test" + Endpoint.EVENTS.spec.path)
    assert request.headers["Authorization"] == f"Klaviyo-API-Key {API_KEY}"
    assert request.headers["revision"] == REVISION
    assert request.headers["Content-Type"] == "application/vnd.api+json"
    assert request.content == BODY


# -- retryable -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 500, 502, 503])
def test_timeout_and_server_errors_are_transient_with_their_status(status: int) -> None:
    with pytest.raises(TransientDeliveryError) as caught:
        _post(_answer(status, {"errors": [_error(status, "try later")]}))
    assert caught.value.http_status == status
    assert caught.value.retry_after is None


def test_429_is_transient_and_carries_retry_after_seconds() -> None:
    with pytest.raises(TransientDeliveryError) as caught:
        _post(_answer(429, {"errors": [_error(429, "throttled")]}, **{"Retry-After": "12"}))
    assert caught.value.http_status == 429
    assert caught.value.retry_after == 12.0


def test_429_with_an_http_date_retry_after_is_transient_without_retry_after() -> None:
    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    with pytest.raises(TransientDeliveryError) as caught:
        _post(_answer(429, None, **{"Retry-After": date}))
    assert caught.value.http_status == 429
    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_timeouts_and_connection_errors_are_transient_without_status(
    failure: httpx.TransportError,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(TransientDeliveryError) as caught:
        _post(handler)
    assert caught.value.http_status is None
    assert caught.value.__cause__ is failure


# -- fatal -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_is_an_authentication_error_that_never_shows_the_key(status: int) -> None:
    document = {"errors": [_error(status, "Incorrect authentication credentials.")]}
    with pytest.raises(AuthenticationError) as caught:
        _post(_answer(status, document))
    text = str(caught.value)
    assert API_KEY not in text
    assert "SECRET" not in text
    assert f"HTTP {status}" in text
    assert "Incorrect authentication credentials." in text
    assert "\n" not in text


@pytest.mark.parametrize("status", [404, 405, 415])
def test_wrong_path_method_or_media_type_refuses_the_request_as_a_whole(status: int) -> None:
    # Even an error carrying a pointer does not make these about an item.
    document = {"errors": [_error(status, "nope", pointer="/data/attributes")]}
    with pytest.raises(RequestRejectedError) as caught:
        _post(_answer(status, document))
    assert caught.value.http_status == status
    assert not isinstance(caught.value, BadRequestError)


def test_413_is_payload_too_large() -> None:
    with pytest.raises(PayloadTooLargeError) as caught:
        _post(_answer(413, {"errors": [_error(413, "Request entity too large.")]}))
    assert caught.value.http_status == 413


# -- 400 -------------------------------------------------------------------------------------


def test_400_naming_only_a_parameter_refuses_the_request_naming_detail_and_parameter() -> None:
    document = {
        "errors": [
            _error(400, "Revision 1999-01-01 is not a valid revision.", parameter="revision")
        ]
    }
    with pytest.raises(RequestRejectedError) as caught:
        _post(_answer(400, document))
    text = str(caught.value)
    assert caught.value.http_status == 400
    assert "Revision 1999-01-01 is not a valid revision." in text
    assert "parameter revision" in text
    assert "\n" not in text


def test_400_whose_errors_have_no_source_refuses_the_request() -> None:
    document = {"errors": [_error(400, "Something about the request.")]}
    with pytest.raises(RequestRejectedError) as caught:
        _post(_answer(400, document))
    assert "Something about the request." in str(caught.value)
    assert "\n" not in str(caught.value)


def test_400_with_a_body_that_is_not_json_refuses_the_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, content=b"<html>Bad Request</html>")

    with pytest.raises(RequestRejectedError) as caught:
        _post(handler)
    assert caught.value.http_status == 400
    assert "no error details" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_400_with_a_pointer_is_a_bad_request_carrying_every_error() -> None:
    errors = [
        _error(400, "Revision is deprecated.", parameter="revision"),
        _error(
            400,
            "Invalid email address.",
            pointer="/data/attributes/events-bulk-create/data/0/attributes/profile",
        ),
    ]
    with pytest.raises(BadRequestError) as caught:
        _post(_answer(400, {"errors": errors}))
    assert caught.value.http_status == 400
    assert caught.value.errors == errors
