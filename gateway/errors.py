"""The gateway's one error tree, rendered once as an OpenAI-shaped error body.

    GatewayError                      any error a client may see
    ├── InvalidRequest (400)          malformed JSON, invalid UTF-8, wrong types
    │   └── PayloadTooLarge (413)     body over the configured limit
    ├── Unauthorized (401)            missing or unknown gateway API key
    ├── UserSuspended (403)           the user is suspended by the enforcement ladder
    ├── NotFound (404)                a path that is neither screened nor in ``passthrough:``
    ├── UserRestricted (429)          a restricted user over the ladder step's rate
    ├── ContentBlocked (400)          input blocked by policy; carries the incident id
    ├── UpstreamError (502)           the upstream failed in a way the client cannot fix
    │   ├── UpstreamTimeout (504)
    │   ├── UpstreamUnavailable (502) connect errors, broken responses
    │   └── UpstreamStatus            the upstream answered an error status; keeps it
    ├── ServiceUnavailable (503)      not ready, draining
    └── ClassifierFailed (500)        a classifier raised or timed out; the policy's
                                      ``on_error`` decides whether a client ever sees it

Every body is ``{"error": {"message", "type", "param", "code"}}`` (as the OpenAI API and
its SDKs expect), plus ``error.modgate`` with the incident id when a decision caused it.
Messages never quote the client's content.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ClassifierFailed",
    "ContentBlocked",
    "GatewayError",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "Unauthorized",
    "UpstreamError",
    "UpstreamStatus",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "UserRestricted",
    "UserSuspended",
    "error_body",
]


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        modgate: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.modgate = modgate
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code, self.modgate)


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "payload_too_large"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class UserSuspended(GatewayError):
    status = 403
    type = "permission_error"
    code = "user_suspended"


class UserRestricted(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "user_restricted"


class ContentBlocked(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "content_filter"


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamStatus(UpstreamError):
    """The upstream answered with an error status; the status and its error body are kept,
    so that SDKs see the same 401/429/5xx (and ``Retry-After``) they would without us."""

    def __init__(self, status: int, body: dict[str, Any] | None, headers: dict[str, str]) -> None:
        #: The upstream's error body as it came, for dialects that pass it on whole.
        self.upstream_body = body
        err = (body or {}).get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            super().__init__(err["message"], param=err.get("param"), code=err.get("code"))
            self.type = str(err.get("type") or "upstream_error")
        else:
            super().__init__(f"upstream answered HTTP {status}", code="upstream_error")
        self.status = status if 400 <= status < 600 else 502
        self.headers = headers


class ServiceUnavailable(GatewayError):
    status = 503
    code = "unavailable"


class ClassifierFailed(GatewayError):
    code = "classifier_error"


def error_body(
    message: str,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    modgate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
    if modgate:
        err["modgate"] = modgate
    return {"error": err}
