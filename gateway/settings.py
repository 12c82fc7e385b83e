"""Process settings: command-line flags and ``MODGATE_*`` environment variables.

Flags win over the environment; both are validated here so that a typo fails at start,
not on the first request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_STORE", "Settings"]

DEFAULT_STORE = "sqlite:///./modgate-data/modgate.db"
_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "password", "admin", "token", "xxx", "todo"}


class Settings(BaseSettings):
    """Everything one gateway process needs to start."""

    model_config = SettingsConfigDict(env_prefix="MODGATE_", extra="forbid", frozen=True)

    upstream: str | None = Field(
        None, description="OpenAI-style base URL including /v1, e.g. http://127.0.0.1:8000/v1."
    )
    policy: Path | None = Field(None, description="Policy file; default: the bundled policies/default.yaml.")
    store: str = Field(DEFAULT_STORE, description="sqlite:///path/to.db or redis://host:port/db.")
    config: Path | None = Field(None, description="Gateway config (upstreams, routes, keys, passthrough).")
    spool_dir: Path | None = Field(
        None,
        description="Where records wait while the store is down; default: next to the SQLite file, "
        "else ./modgate-data.",
    )
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    admin_token: SecretStr | None = Field(None, description="Bearer token for /admin endpoints.")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Request body limit (413 above).")
    drain_seconds: float = Field(5.0, ge=0, le=120, description="How long SIGTERM waits for open streams.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False

    @field_validator("admin_token")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("MODGATE_ADMIN_TOKEN is a placeholder; set a real secret")
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("MODGATE_ADMIN_TOKEN must be at least 16 characters")
        return value

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"upstream must be an http(s) URL, got {value!r}")
        return value.rstrip("/") if value else value

    def spool_folder(self) -> Path:
        if self.spool_dir is not None:
            return self.spool_dir
        if self.store.startswith("sqlite:///") and not self.store.endswith(":memory:"):
            return Path(self.store.removeprefix("sqlite:///")).parent
        return Path("modgate-data")

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "redis://", "rediss://")):
            raise ValueError("store must be sqlite:///path or redis://host:port/db")
        return value
