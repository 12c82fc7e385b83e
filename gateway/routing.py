"""Runtime routing: gateway API keys → tenant; path, model and key → upstream + policy."""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from gateway.config import GatewayConfig, RouteConfig, UpstreamConfig
from gateway.errors import NotFound, Unauthorized
from gateway.policy import Policy

if TYPE_CHECKING:
    from gateway.upstream import UpstreamClient

__all__ = ["Caller", "Route", "Router", "Upstream"]

log = logging.getLogger(__name__)


@dataclass
class Upstream:
    name: str
    config: UpstreamConfig
    client: UpstreamClient

    def url(self, path: str) -> str:
        """``/v1/chat/completions`` → ``{base_url}/chat/completions`` (base URL includes /v1)."""
        suffix = path[len("/v1") :] if path.startswith("/v1/") else path
        return self.config.base_url + suffix

    def auth_headers(
        self, client_authorization: str | None, client_api_key: str | None = None
    ) -> dict[str, str]:
        """The config's headers and the upstream's credentials, in its dialect's header; without
        an upstream key, the client's own credentials (``Caller`` holds them only when the
        gateway has no keys of its own). An OpenAI upstream takes only ``authorization``."""
        headers = {k: v.get_secret_value() for k, v in self.config.headers.items()}
        key = self.config.api_key
        if self.config.dialect == "anthropic":
            if key is not None:
                headers["x-api-key"] = key.get_secret_value()
                return headers
            if client_api_key:
                headers["x-api-key"] = client_api_key
        elif key is not None:
            headers["authorization"] = f"Bearer {key.get_secret_value()}"
            return headers
        if client_authorization:
            headers["authorization"] = client_authorization
        return headers


@dataclass(frozen=True)
class Caller:
    """Who is calling: the gateway key's name and tenant, or anonymous when no keys exist."""

    key_name: str | None = None
    tenant: str = "default"
    #: The client's own Authorization header; forwarded only when no gateway keys are configured.
    authorization: str | None = None
    #: The key's ``user`` mapping (raw id, for enforcement when the request names no user).
    user: str | None = None
    #: The client's own ``x-api-key`` header; like ``authorization``, kept only without gateway
    #: keys, and sent only to an Anthropic-dialect upstream.
    api_key: str | None = None


@dataclass
class Route:
    config: RouteConfig
    upstream: Upstream
    policy: Policy

    @property
    def name(self) -> str:
        return self.config.name or f"{self.config.path_prefix}{self.config.model}"

    def matches(self, path: str, model: str | None, caller: Caller, *, any_model: bool = False) -> bool:
        cfg = self.config
        if not path.startswith(cfg.path_prefix):
            return False
        if not any_model and cfg.model != "*" and (model is None or not fnmatchcase(model, cfg.model)):
            return False
        return cfg.keys is None or caller.key_name in cfg.keys


@dataclass
class Router:
    config: GatewayConfig
    routes: list[Route]
    default_policy: Policy
    _keys: dict[bytes, tuple[str, str, str | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.config.keys:
            digest = hashlib.sha256(key.key.get_secret_value().encode()).digest()
            self._keys[digest] = (key.name, key.tenant, key.user)
        if not self._keys and any(u.api_key for u in self.config.upstreams.values()):
            log.warning(
                "OPEN PROXY: upstream credentials are configured but no gateway keys are; "
                "anyone who can reach this gateway spends those credentials. Add keys: to the config."
            )

    @property
    def requires_key(self) -> bool:
        return bool(self._keys)

    def authenticate(self, authorization: str | None, api_key_header: str | None) -> Caller:
        """Check the gateway key (``Authorization: Bearer`` or ``x-api-key``) when keys exist."""
        if not self._keys:
            return Caller(authorization=authorization, api_key=api_key_header)
        token = api_key_header
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        if not token:
            raise Unauthorized("a gateway API key is required (Authorization: Bearer <key>)")
        digest = hashlib.sha256(token.encode()).digest()
        for known, (name, tenant, user) in self._keys.items():
            if hmac.compare_digest(known, digest):
                return Caller(key_name=name, tenant=tenant, user=user)
        raise Unauthorized("the gateway API key is not valid")

    def find(self, path: str, model: str | None, caller: Caller, *, any_model: bool = False) -> Route | None:
        """The first matching route; ``any_model`` for paths that carry no model (passthrough)."""
        return next((r for r in self.routes if r.matches(path, model, caller, any_model=any_model)), None)

    def resolve(self, path: str, model: str | None, caller: Caller) -> Route:
        route = self.find(path, model, caller)
        if route is None:
            raise NotFound(
                f"no route serves {path} for model {model!r}" if model else f"no route serves {path}"
            )
        return route

    def adapted(self, path: str) -> Route | None:
        """The first route under whose path prefix a generic adapter serves ``path``."""
        return next(
            (
                r
                for r in self.routes
                if r.config.adapter is not None and path.startswith(r.config.path_prefix)
            ),
            None,
        )

    def policy_for(self, path: str, model: str | None, caller: Caller) -> Policy:
        """The policy of the matching route, or the default policy when none matches."""
        route = self.find(path, model, caller)
        return route.policy if route is not None else self.default_policy

    def passthrough(self, path: str) -> bool:
        if not _is_clean(path):
            return False
        for allowed in self.config.passthrough:
            if allowed.endswith("*") and path.startswith(allowed[:-1]):
                return True
            if path == allowed:
                return True
        return False


def _is_clean(path: str) -> bool:
    """No dot segments, empty segments or backslashes: the upstream (or httpx) would resolve
    them, so ``/v1/files/../chat/completions`` would reach a screened endpoint unscreened."""
    if "\\" in path or "//" in path:
        return False
    return all(segment not in (".", "..") for segment in path.split("/"))
