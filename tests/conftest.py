"""Fixtures: a scripted upstream and gateways, both served for real on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fastapi import FastAPI

from gateway.app import AppState, create_app
from gateway.settings import Settings
from tests.support.anthropic_upstream import AnthropicUpstream
from tests.support.classifier_servers import ClassifierServer
from tests.support.servers import serve_in_thread
from tests.support.upstream import ScriptedUpstream

TEST_POLICY = """
name: test
extends: default
classifiers:
  guard: null  # the bundled model is tested on its own (test_guard_model.py); these test the flow
  banned-terms:
    type: lexicon
    terms:
      A.1.d: ["zorblax", "炸药配方"]
      X.test_refuse: ["refuseword", "拒绝词"]
      X.test_flag: ["flagword", "标记词"]
      X.test_redact: ["secretword", "机密词"]
rules:
  A.1.d: {input: block, output: block, report: true}
  X.test_refuse: {input: refuse, output: refuse}
  X.test_flag: {input: flag, output: flag}
  X.test_redact: {input: redact, output: redact}
streaming:
  mode: hold
"""


@dataclass
class Upstream:
    app: ScriptedUpstream
    base: str  # includes /v1


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    app = ScriptedUpstream()
    with serve_in_thread(app) as base:
        yield Upstream(app, f"{base}/v1")


@dataclass
class AnthropicServer:
    app: AnthropicUpstream
    base: str  # includes /v1


@pytest.fixture(scope="session")
def anthropic_upstream() -> Iterator[AnthropicServer]:
    app = AnthropicUpstream()
    with serve_in_thread(app) as base:
        yield AnthropicServer(app, f"{base}/v1")


@pytest.fixture(scope="module")
def classifier_services() -> Iterator[tuple[ClassifierServer, str]]:
    """The scripted remote classification services (``type: remote``) and their base URL."""
    server = ClassifierServer()
    with serve_in_thread(server.app()) as base:
        yield server, base


@dataclass
class Gateway:
    base: str
    app: FastAPI
    tmp: Path

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.modgate
        return state

    def openai(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("api_key", "sk-client-key")
        return openai.OpenAI(base_url=f"{self.base}/v1", max_retries=0, timeout=20, **kwargs)

    def anthropic(self, **kwargs: Any) -> anthropic.Anthropic:
        kwargs.setdefault("api_key", "sk-ant-client-key")
        return anthropic.Anthropic(base_url=self.base, max_retries=0, timeout=20, **kwargs)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=20)

    def incidents(self) -> list[Any]:
        async def fetch() -> list[Any]:
            from gateway.store.sqlite import SQLiteStore

            store = SQLiteStore(self.state.settings.store)
            await store.open()
            try:
                return (await store.incidents.list(100)).data
            finally:
                await store.close()

        return asyncio.run(fetch())


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def make_gateway(upstream: Upstream, tmp_path: Path) -> Iterator[GatewayFactory]:
    stack: list[Any] = []

    def factory(policy: str | None = TEST_POLICY, config: str | None = None, **settings: Any) -> Gateway:
        folder = tmp_path / f"gw{len(stack)}"
        folder.mkdir()
        values: dict[str, Any] = {
            "store": f"sqlite:///{folder}/modgate.db",
            "upstream": upstream.base,
            "spool_dir": folder / "spool",
        }
        if policy is not None:
            (folder / "policy.yaml").write_text(policy, encoding="utf-8")
            values["policy"] = folder / "policy.yaml"
        if config is not None:
            (folder / "gateway.yaml").write_text(
                config.replace("{upstream}", upstream.base), encoding="utf-8"
            )
            values["config"] = folder / "gateway.yaml"
        values.update(settings)
        app = create_app(Settings(**values))
        ctx = serve_in_thread(app)
        base = ctx.__enter__()
        stack.append(ctx)
        return Gateway(base, app, folder)

    yield factory
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)


@pytest.fixture
def gateway(make_gateway: GatewayFactory) -> Gateway:
    return make_gateway()


def mock(**script: Any) -> dict[str, str]:
    """Headers that script the upstream's answer (see tests/support/upstream.py)."""
    return {"x-mock": json.dumps(script)}
