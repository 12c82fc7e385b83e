"""Gateway config (``--config gateway.yaml``): upstreams, routes, API keys, passthrough paths.

Strings may reference the environment as ``${NAME}`` so that credentials stay out of the
file; an unset variable is an error. Without a config file the command-line flags make one
default route (:func:`default_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from classifiers.http import expand_env
from gateway.generic_api import GenericAdapter

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "KeyConfig",
    "ReportSettings",
    "RouteConfig",
    "UpstreamConfig",
    "WebhookSink",
    "default_config",
    "load_config",
]


class ConfigError(ValueError):
    """The gateway config could not be loaded; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    connect: float = Field(10.0, gt=0, description="Seconds to open a connection.")
    read: float = Field(300.0, gt=0, description="Seconds between bytes (generation can pause).")
    write: float = Field(30.0, gt=0)
    pool: float = Field(10.0, gt=0, description="Seconds to wait for a free pooled connection.")


class UpstreamConfig(_Strict):
    base_url: str = Field(..., description="Base URL including /v1 (OpenAI- or Anthropic-style).")
    dialect: Literal["openai", "anthropic"] = Field(
        "openai",
        description="How the upstream takes its key: 'openai' as 'Authorization: Bearer', "
        "'anthropic' as 'x-api-key'.",
    )
    api_key: SecretStr | None = Field(
        None,
        description="Sent as the dialect asks ('Authorization: Bearer' or 'x-api-key'); "
        "replaces the client's credentials.",
    )
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Extra headers sent upstream.")
    timeout: Timeouts = Timeouts()
    max_connections: int = Field(1024, ge=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL")
        return value.rstrip("/")


class RouteConfig(_Strict):
    name: str | None = None
    path_prefix: str = Field("/", description="Request path prefix this route serves.")
    model: str = Field("*", description="Model-name glob (fnmatch), e.g. 'qwen-*'.")
    keys: list[str] | None = Field(None, description="Gateway key names allowed; omit for any.")
    upstream: str
    policy: str = Field("default", description="A name under policies:, 'default', or a file path.")
    adapter: GenericAdapter | None = Field(
        None,
        description="Any other JSON API: where its texts are (see README, 'Any JSON API'). POST requests "
        "under path_prefix are then screened by it.",
    )


class KeyConfig(_Strict):
    name: str
    key: SecretStr = Field(..., description="The bearer token clients send (use ${ENV} references).")
    tenant: str
    user: str | None = Field(
        None, description="User id for enforcement when the request names none (one user per key)."
    )

    @field_validator("key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("gateway API keys must be at least 16 characters")
        return value


class WebhookSink(_Strict):
    url: str = Field(..., description="POSTed one JSON event per report change.")
    secret: SecretStr = Field(..., description="HMAC-SHA256 key; the signature goes in X-Modgate-Signature.")
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("webhook url must be an http(s) URL")
        return value


class ReportSettings(_Strict):
    """Where queued reports go, and how hard the worker tries."""

    jsonl_dir: Path | None = Field(None, description="One reports-YYYY-MM-DD.jsonl file per day here.")
    webhook: WebhookSink | None = None
    worker: bool = Field(True, description="Run the delivery worker inside serve.")
    max_attempts: int = Field(8, ge=1, le=100, description="Failed deliveries before the dead letter.")
    retry_base_s: float = Field(1.0, gt=0, description="First retry delay; doubles per attempt.")
    retry_max_s: float = Field(300.0, gt=0)
    reclaim_after_s: float = Field(60.0, gt=0, description="Events a crashed worker held are retaken after.")


class GatewayConfig(_Strict):
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    policies: dict[str, str] = Field(default_factory=dict, description="Policy name -> file path.")
    routes: list[RouteConfig] = Field(default_factory=list, description="First match wins.")
    keys: list[KeyConfig] = Field(default_factory=list)
    passthrough: list[str] = Field(
        default_factory=list, description="Extra paths proxied unscreened ('/v1/files' or '/v1/files/*')."
    )
    admin_tokens: dict[str, SecretStr] = Field(
        default_factory=dict, description="Admin token name -> token; the name is recorded as the actor."
    )
    provider: str = Field(
        "modgate", min_length=1, description="Service provider name: ContentProducer in AIGC labels."
    )
    pseudonym_secret: SecretStr | None = Field(
        None, description="HMAC key for user pseudonyms; none: one is made once and kept in the store."
    )
    reports: ReportSettings = ReportSettings()
    base_dir: Path = Field(Path("."), exclude=True)

    @field_validator("provider")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():  # the AIGC label's ContentProducer must name someone
            raise ValueError("provider must not be blank")
        return value.strip()

    @model_validator(mode="after")
    def _references(self) -> GatewayConfig:
        for i, route in enumerate(self.routes):
            if route.upstream not in self.upstreams:
                raise ValueError(f"routes.{i}.upstream: no upstream named {route.upstream!r}")
            for key in route.keys or ():
                if key not in {k.name for k in self.keys}:
                    raise ValueError(f"routes.{i}.keys: no key named {key!r}")
        names = [k.name for k in self.keys]
        if len(names) != len(set(names)):
            raise ValueError("keys: names must be unique")
        for name, token in self.admin_tokens.items():
            if len(token.get_secret_value()) < 16:
                raise ValueError(f"admin_tokens.{name}: must be at least 16 characters")
        for path in self.passthrough:
            if not path.startswith("/"):
                raise ValueError(f"passthrough: {path!r} must start with '/'")
        return self

    def policy_path(self, ref: str) -> str:
        """Resolve a route's policy reference to 'default' or a file path."""
        if ref in self.policies:
            return str((self.base_dir / self.policies[ref]).resolve())
        if ref == "default":
            return ref
        return str((self.base_dir / ref).resolve())


def _expand_env(value: Any, where: str) -> Any:
    if isinstance(value, str):
        try:
            return expand_env(value, where)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{where}.{i}") for i, v in enumerate(value)]
    return value


def load_config(path: Path) -> GatewayConfig:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the gateway config must be a mapping")
    raw = _expand_env(raw, str(path))
    try:
        return GatewayConfig.model_validate({**raw, "base_dir": path.parent.resolve()})
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from exc


def default_config(upstream: str | None, policy: Path | None) -> GatewayConfig:
    """The one-route config that the flags describe."""
    if upstream is None:
        return GatewayConfig()
    return GatewayConfig(
        upstreams={"default": UpstreamConfig(base_url=upstream)},
        policies={"default-route": str(policy.resolve())} if policy else {},
        routes=[
            RouteConfig(name="default", upstream="default", policy="default-route" if policy else "default")
        ],
    )
