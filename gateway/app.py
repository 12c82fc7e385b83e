"""The app factory. Everything a request needs lives on ``app.state.modgate``.

``create_app`` loads and validates the config and policies at once (a bad file fails here,
before the server listens); the lifespan opens what needs the event loop (HTTP clients,
store) and warms the classifiers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from classifiers.http import aclose_shared_clients
from gateway.admin import AdminAuth
from gateway.config import GatewayConfig, default_config, load_config
from gateway.enforcement import Enforcer
from gateway.errors import GatewayError, InvalidRequest, NotFound, error_body
from gateway.metrics import Metrics
from gateway.middleware import EdgeMiddleware, HotPathMiddleware
from gateway.policy import Policy
from gateway.policy_loader import load_policy
from gateway.privacy import Pseudonymizer, pseudonym_key
from gateway.recorder import Recorder
from gateway.report_worker import ReportWorker
from gateway.responses import error_response, internal_error_response, json_response
from gateway.retention import purge_forever
from gateway.routing import Route, Router, Upstream
from gateway.screening import Segment, screen
from gateway.settings import Settings
from gateway.sinks import sinks_from
from gateway.spool import Spool
from gateway.store.base import Store, open_store
from gateway.upstream import UpstreamClient

__all__ = ["AppState", "app_from_env", "create_app", "load_gateway"]

log = logging.getLogger(__name__)

WARMUP_TEXTS = ("Hello, how are you today?", "你好，今天天气怎么样？")
#: How often a gateway that started without the pseudonym secret (store down) asks again.
PSEUDONYM_RETRY_S = 5.0


@dataclass
class AppState:
    settings: Settings
    config: GatewayConfig
    metrics: Metrics
    default_policy: Policy
    policies: dict[str, Policy]
    store: Store
    recorder: Recorder
    admin: AdminAuth = field(default_factory=lambda: AdminAuth({}))
    router: Router | None = None
    ready: dict[str, bool] = field(default_factory=dict)
    #: Keyed at start from ``config.pseudonym_secret`` or the store's kept secret.
    pseudonymizer: Pseudonymizer | None = None
    pseudonym_retry_at: float = 0.0

    @property
    def all_policies(self) -> list[Policy]:
        return [self.default_policy, *self.policies.values()]

    @cached_property
    def enforcer(self) -> Enforcer:
        return Enforcer(self.store.users, self.metrics)

    async def pseudonym(self, user: str | None) -> str | None:
        """``user`` as it may be stored and logged; None without a user, or while the secret
        is unknown (no ``pseudonym_secret`` and the store was down since start)."""
        if user is None:
            return None
        if self.pseudonymizer is None and time.monotonic() >= self.pseudonym_retry_at:
            await self.load_pseudonymizer()
        return self.pseudonymizer(user) if self.pseudonymizer is not None else None

    async def load_pseudonymizer(self) -> None:
        try:
            key = await pseudonym_key(self.config, self.store)
        except Exception:
            # A fresh random key would give other pseudonyms than the other replicas and the
            # stored record: without the kept one, users go unidentified (and unenforced).
            self.pseudonym_retry_at = time.monotonic() + PSEUDONYM_RETRY_S
            log.warning("pseudonym secret unavailable (store down); users are not identified for now")
            self.metrics.child(self.metrics.store_errors, "pseudonym_secret").inc()
            return
        self.pseudonymizer = Pseudonymizer(key)


def load_gateway(settings: Settings) -> tuple[GatewayConfig, Policy, dict[str, Policy]]:
    """Load config and every policy it names; raises ConfigError / PolicyError on a bad file."""
    config = (
        load_config(settings.config)
        if settings.config
        else default_config(settings.upstream, settings.policy)
    )
    return config, *load_policies(settings, config)


def load_policies(settings: Settings, config: GatewayConfig) -> tuple[Policy, dict[str, Policy]]:
    """The default policy, and every route's policy by reference; PolicyError on a bad file."""
    default_policy = load_policy(settings.policy)
    policies: dict[str, Policy] = {}
    for route in config.routes:
        ref = config.policy_path(route.policy)
        if ref not in policies:
            policies[ref] = (
                default_policy if ref == "default" and settings.policy is None else load_policy(ref)
            )
    return default_policy, policies


async def warm(policies: Iterable[Policy]) -> None:
    """Screen a few texts with each policy once, so that caches and models are built before
    traffic comes."""
    segments = [Segment(t, "user") for t in WARMUP_TEXTS]
    for policy in {id(p): p for p in policies}.values():
        await screen(policy, segments, "input")


async def _warm(state: AppState) -> None:
    await warm(state.all_policies)
    state.ready["classifiers"] = True


def _tune_gc() -> None:
    """Keep the cyclic GC off the hot path: everything built at start-up (policies, automata,
    compiled regexes, models) is frozen out of collections, and young collections run less
    often. Request-scoped objects die young, so this costs little memory; measured in-process,
    the default policy's request cost fell by about a quarter (benchmarks/README.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.modgate
    cfg = state.config
    upstreams = {name: Upstream(name, up, UpstreamClient(up)) for name, up in cfg.upstreams.items()}
    routes = [Route(r, upstreams[r.upstream], state.policies[cfg.policy_path(r.policy)]) for r in cfg.routes]
    state.router = Router(cfg, routes, state.default_policy)
    if not routes:
        log.warning("no upstream configured: only /v1/moderations screens; pass --upstream or --config")
    await state.store.open()
    state.ready["store"] = True
    await state.load_pseudonymizer()
    await _warm(state)
    _tune_gc()
    tasks = [
        asyncio.create_task(state.recorder.replay_forever(), name="modgate-spool-replay"),
        asyncio.create_task(purge_forever(state), name="modgate-retention"),
    ]
    worker = _report_worker(state) if cfg.reports.worker else None
    if worker is not None:
        worker.start()
    log.info(
        "modgate ready policy=%s@%s routes=%d store=%s",
        state.default_policy.name,
        state.default_policy.version,
        len(routes),
        state.store.url.split("://")[0],
    )
    try:
        yield
    finally:
        if worker is not None:
            await worker.stop()
            for sink in worker.sinks:
                await sink.aclose()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for upstream in upstreams.values():
            await upstream.client.aclose()
        await aclose_shared_clients()
        await state.store.close()


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return await _gateway_error(request, NotFound(f"no such endpoint: {request.url.path}"))
    body = error_body(str(exc.detail), "invalid_request_error", None, f"http_{exc.status_code}")
    return json_response(body, exc.status_code)


async def _validation_error(request: Request, exc: Exception) -> Response:
    return await _gateway_error(request, InvalidRequest("invalid request"))


async def _unexpected(request: Request, exc: Exception) -> Response:
    return internal_error_response(request.scope)


def _report_worker(state: AppState) -> ReportWorker:
    metrics = state.metrics

    def attempted(sink: str, ok: bool) -> None:
        metrics.report_deliveries.labels(sink, "delivered" if ok else "failed").inc()

    sinks = sinks_from(state.config.reports, state.config.base_dir)
    return ReportWorker(
        state.store.reports, sinks, on_attempt=attempted, on_dead=lambda _: metrics.report_dead.inc()
    )


def _admin(settings: Settings, config: GatewayConfig) -> AdminAuth:
    tokens = {name: token.get_secret_value() for name, token in config.admin_tokens.items()}
    if settings.admin_token is not None:
        tokens.setdefault("admin", settings.admin_token.get_secret_value())
    return AdminAuth(tokens)


def create_app(settings: Settings) -> FastAPI:
    """Build the gateway app for ``settings``; config and policies are validated here."""
    from gateway.routes import (
        admin,
        admin_cases,
        chat,
        complaints,
        completions,
        embeddings,
        health,
        messages,
        moderations,
        passthrough,
        responses_api,
    )

    config, default_policy, policies = load_gateway(settings)
    metrics = Metrics()
    store = open_store(settings.store, config.reports)
    recorder = Recorder(store, metrics, Spool(settings.spool_folder()), lambda: state.all_policies)
    state = AppState(
        settings, config, metrics, default_policy, policies, store, recorder, _admin(settings, config)
    )
    app = GatewayApp(title="modgate", lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.modgate = state
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    # Plain Starlette routes: these endpoints read the raw body themselves, so FastAPI's
    # dependency and body handling would be pure overhead on the hot path.
    # The passthrough catch-all comes last.
    for module in (health, admin, admin_cases, complaints, passthrough):
        app.router.routes.extend(module.routes)
    app.add_middleware(EdgeMiddleware, metrics=metrics, max_bytes=settings.max_body_bytes)
    hot = {
        **chat.hot,
        **messages.hot,
        **moderations.hot,
        **completions.hot,
        **embeddings.hot,
        **responses_api.hot,
    }
    app.hot_routes = frozenset(hot)
    app.hot_stack = EdgeMiddleware(
        HotPathMiddleware(app.router, hot), metrics, settings.max_body_bytes, messages.renderers
    )
    return app


class GatewayApp(FastAPI):
    """FastAPI, except that the screened endpoints enter below FastAPI's own outer middleware
    (server-error page, OpenTelemetry hook, its body limit): the edge middleware and the hot
    path do those jobs for them, and the three layers cost a few percent of a request."""

    hot_routes: frozenset[tuple[str, str]] = frozenset()
    hot_stack: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hot_stack is not None and (scope.get("method"), scope.get("path")) in self.hot_routes:
            scope["app"] = self
            await self.hot_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and for ``--workers N`` (settings from MODGATE_*)."""
    return create_app(Settings())  # reads MODGATE_*
