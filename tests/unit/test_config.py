"""Tests for gateway.config (gateway.yaml) and gateway.routing (keys, routes, passthrough)."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.errors import NotFound, Unauthorized
from gateway.policy import Policy, PolicyFile
from gateway.routing import Caller, Route, Router, Upstream

KEY_A = "sk-team-a-0123456789abcdef"
KEY_B = "sk-team-b-甲乙丙丁-0123456789"

GATEWAY_YAML = """\
upstreams:
  qwen:
    base_url: http://qwen.internal:8000/v1/
    api_key: ${QWEN_KEY}
    headers: {x-org: "org-${ORG}"}
    timeout: {connect: 2, read: 60}
  openai:
    base_url: https://api.openai.example/v1
  embed:
    base_url: http://embed.internal/v1
policies:
  strict: policies/strict.yaml
routes:
  - name: qwen-team-a
    path_prefix: /v1/chat
    model: "qwen-*"
    keys: [team-a]
    upstream: qwen
    policy: strict
  - name: qwen-any
    model: "qwen-*"
    upstream: qwen
  - name: embeddings
    path_prefix: /v1/embeddings
    upstream: embed
  - upstream: openai
    policy: default
keys:
  - {name: team-a, key: "${KEY_A}", tenant: 租户甲}
  - {name: team-b, key: "${KEY_B}", tenant: tenant-b}
passthrough: [/v1/files/*, /v1/batches]
"""


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_KEY", "sk-upstream-qwen-secret")
    monkeypatch.setenv("ORG", "组织-42")
    monkeypatch.setenv("KEY_A", KEY_A)
    monkeypatch.setenv("KEY_B", KEY_B)


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    return message


def policy(name: str) -> Policy:
    return Policy(spec=PolicyFile(name=name), classifiers={}, version=f"v-{name}", source=name)


# --- loading ---------------------------------------------------------------------------------


def test_load_full_config(tmp_path: Path, env: None) -> None:
    config = load_config(write(tmp_path, GATEWAY_YAML))
    assert set(config.upstreams) == {"qwen", "openai", "embed"}
    qwen = config.upstreams["qwen"]
    assert qwen.base_url == "http://qwen.internal:8000/v1"  # trailing slash dropped
    assert qwen.api_key is not None
    assert qwen.api_key.get_secret_value() == "sk-upstream-qwen-secret"
    assert qwen.headers["x-org"].get_secret_value() == "org-组织-42"
    assert (qwen.timeout.connect, qwen.timeout.read, qwen.timeout.write) == (2, 60, 30.0)
    assert config.upstreams["openai"].api_key is None
    assert [r.name for r in config.routes] == ["qwen-team-a", "qwen-any", "embeddings", None]
    assert config.routes[0].keys == ["team-a"]
    assert config.routes[1].path_prefix == "/"
    assert config.routes[3].model == "*"
    assert [(k.name, k.tenant, k.key.get_secret_value()) for k in config.keys] == [
        ("team-a", "租户甲", KEY_A),
        ("team-b", "tenant-b", KEY_B),
    ]
    assert config.passthrough == ["/v1/files/*", "/v1/batches"]
    assert config.base_dir == tmp_path.resolve()


def test_secrets_do_not_show_in_repr(tmp_path: Path, env: None) -> None:
    config = load_config(write(tmp_path, GATEWAY_YAML))
    shown = repr(config) + str(config.model_dump())
    assert "sk-upstream-qwen-secret" not in shown
    assert KEY_A not in shown


def test_policy_paths_resolve_against_the_config_folder(tmp_path: Path, env: None) -> None:
    config = load_config(write(tmp_path, GATEWAY_YAML))
    assert config.policy_path("strict") == str((tmp_path / "policies" / "strict.yaml").resolve())
    assert config.policy_path("default") == "default"
    assert config.policy_path("other/p.yaml") == str((tmp_path / "other" / "p.yaml").resolve())


def test_empty_config_is_allowed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "{}\n"))
    assert (config.upstreams, config.routes, config.keys, config.passthrough) == ({}, [], [], [])


# --- ${ENV} ----------------------------------------------------------------------------------


def test_env_interpolation_everywhere_strings_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST", "llm.internal")
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("TENANT", "租户-乙")
    monkeypatch.setenv("TRICKY", "literal-${NOT_EXPANDED}-0123456789")
    text = """\
upstreams:
  main: {base_url: "http://${HOST}:${PORT}/v1"}
routes: [{upstream: main}]
keys: [{name: k, key: "${TRICKY}", tenant: "${TENANT}"}]
"""
    config = load_config(write(tmp_path, text))
    assert config.upstreams["main"].base_url == "http://llm.internal:9000/v1"
    assert config.keys[0].tenant == "租户-乙"
    # An expanded value is not expanded again.
    assert config.keys[0].key.get_secret_value() == "literal-${NOT_EXPANDED}-0123456789"


def test_unset_env_variable_is_named(tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEY_B")
    message = config_error(tmp_path, GATEWAY_YAML)
    assert "KEY_B" in message
    assert "keys.1.key" in message
    assert "not set" in message


def test_unset_env_variable_in_a_mapping_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSET_UPSTREAM_KEY", raising=False)
    text = "upstreams:\n  main: {base_url: 'http://x/v1', api_key: '${UNSET_UPSTREAM_KEY}'}\n"
    message = config_error(tmp_path, text)
    assert "UNSET_UPSTREAM_KEY" in message
    assert "upstreams.main.api_key" in message


# --- refused configs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("colour: red\n", "colour"),
        ("upstreams:\n  main: {base_url: 'http://x/v1', api_kye: k}\n", "upstreams.main.api_kye"),
        ("upstreams:\n  main: {bse_url: 'http://x/v1'}\n", "upstreams.main.bse_url"),
        (
            "upstreams:\n  主: {base_url: 'http://x/v1', timeout: {connnect: 1}}\n",
            "upstreams.主.timeout.connnect",
        ),
        ("upstreams:\n  m: {base_url: 'http://x/v1'}\nroutes: [{upstream: m, modle: x}]\n", "routes.0.modle"),
        ("keys: [{name: k, key: '0123456789abcdef', tenant: t, role: admin}]\n", "keys.0.role"),
    ],
)
def test_unknown_key_names_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    message = config_error(tmp_path, text)
    assert f": {key}: Extra inputs are not permitted" in message


def test_route_to_unknown_upstream(tmp_path: Path) -> None:
    text = (
        "upstreams:\n  main: {base_url: 'http://x/v1'}\nroutes:\n  - {upstream: main}\n  - {upstream: mian}\n"
    )
    message = config_error(tmp_path, text)
    assert "routes.1.upstream" in message
    assert "'mian'" in message


def test_route_to_unknown_key(tmp_path: Path) -> None:
    text = (
        "upstreams:\n  main: {base_url: 'http://x/v1'}\n"
        "keys: [{name: team-a, key: '0123456789abcdef', tenant: t}]\n"
        "routes:\n  - {upstream: main, keys: [team-a, 团队乙]}\n"
    )
    message = config_error(tmp_path, text)
    assert "routes.0.keys" in message
    assert "'团队乙'" in message


@pytest.mark.parametrize("key", ["short", "sk-123456789012", "一二三四五六七八九十一二三四五"])
def test_keys_shorter_than_16_chars_are_refused(tmp_path: Path, key: str) -> None:
    assert len(key) < 16
    message = config_error(tmp_path, f"keys: [{{name: k, key: '{key}', tenant: t}}]\n")
    assert "keys.0.key" in message
    assert "16" in message
    assert key not in message.split("keys.0.key", 1)[1]  # the secret is not echoed


@pytest.mark.parametrize("key", ["0123456789abcdef", "一二三四五六七八九十一二三四五六"])
def test_keys_of_16_chars_are_accepted(tmp_path: Path, key: str) -> None:
    config = load_config(write(tmp_path, f"keys: [{{name: k, key: '{key}', tenant: t}}]\n"))
    assert config.keys[0].key.get_secret_value() == key


def test_duplicate_key_names_are_refused(tmp_path: Path) -> None:
    text = (
        "keys:\n  - {name: k, key: '0123456789abcdef', tenant: a}\n"
        "  - {name: k, key: 'fedcba9876543210', tenant: b}\n"
    )
    assert "unique" in config_error(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("upstreams:\n  main: {base_url: 'ftp://x/v1'}\n", "upstreams.main.base_url"),
        ("upstreams:\n  main: {base_url: 'x.internal/v1'}\n", "upstreams.main.base_url"),
        ("passthrough: [v1/files]\n", "passthrough"),
        ("routes: [{path_prefix: /v1}]\n", "routes.0.upstream"),
        (
            "upstreams:\n  main: {base_url: 'http://x/v1', max_connections: 0}\n",
            "upstreams.main.max_connections",
        ),
    ],
)
def test_invalid_values(tmp_path: Path, text: str, fragment: str) -> None:
    assert fragment in config_error(tmp_path, text)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", ""])
def test_non_mapping_config(tmp_path: Path, text: str) -> None:
    assert "mapping" in config_error(tmp_path, text)


def test_invalid_yaml(tmp_path: Path) -> None:
    config_error(tmp_path, "upstreams: {main: [\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "absent.yaml"))):
        load_config(tmp_path / "absent.yaml")


# --- routing ---------------------------------------------------------------------------------


@pytest.fixture
async def clients() -> AsyncIterator[list[httpx.AsyncClient]]:
    made: list[httpx.AsyncClient] = []
    yield made
    for client in made:
        await client.aclose()


def build_router(config: GatewayConfig, clients: list[httpx.AsyncClient]) -> Router:
    client = httpx.AsyncClient()  # one pool is enough here: no test sends a request
    clients.append(client)
    upstreams = {name: Upstream(name, cfg, client) for name, cfg in config.upstreams.items()}
    routes = [Route(r, upstreams[r.upstream], policy(r.policy)) for r in config.routes]
    return Router(config, routes, policy("fallback"))


@pytest.fixture
def router(tmp_path: Path, env: None, clients: list[httpx.AsyncClient]) -> Router:
    return build_router(load_config(write(tmp_path, GATEWAY_YAML)), clients)


def test_authenticate_bearer(router: Router) -> None:
    assert router.requires_key
    assert router.authenticate(f"Bearer {KEY_A}", None) == Caller("team-a", "租户甲", None)
    assert router.authenticate(f"bearer {KEY_B}", None) == Caller("team-b", "tenant-b", None)
    assert router.authenticate(f"BEARER   {KEY_A}  ", None).key_name == "team-a"


def test_authenticate_x_api_key(router: Router) -> None:
    assert router.authenticate(None, KEY_B) == Caller("team-b", "tenant-b", None)
    assert router.authenticate("Basic dXNlcjpwYXNz", KEY_A).key_name == "team-a"


def test_authenticated_caller_does_not_forward_the_gateway_key(router: Router) -> None:
    caller = router.authenticate(f"Bearer {KEY_A}", None)
    assert caller.authorization is None
    headers = router.routes[2].upstream.auth_headers(caller.authorization)  # embed: no api_key
    assert "authorization" not in headers


@pytest.mark.parametrize(
    ("authorization", "api_key"),
    [
        (None, None),
        ("", ""),
        ("Bearer ", None),
        ("Basic dXNlcjpwYXNz", None),
        (f"Bearer {KEY_A}x", None),
        (f"Bearer {KEY_A[:-1]}", None),
        (None, "sk-unknown-0123456789abcdef"),
        (f"Bearer {KEY_A.upper()}", None),
        ("Bearer 甲乙丙丁甲乙丙丁甲乙丙丁甲乙丙丁", None),
        ("Bearer sk-wrong-0123456789abcdef", KEY_A),  # the bearer token is the one checked
    ],
)
def test_authenticate_refuses(router: Router, authorization: str | None, api_key: str | None) -> None:
    with pytest.raises(Unauthorized) as info:
        router.authenticate(authorization, api_key)
    assert info.value.status == 401
    assert KEY_A not in info.value.message


async def test_without_keys_the_clients_authorization_is_kept(
    tmp_path: Path, clients: list[httpx.AsyncClient]
) -> None:
    text = "upstreams:\n  main: {base_url: 'http://x/v1'}\nroutes: [{upstream: main}]\n"
    router = build_router(load_config(write(tmp_path, text)), clients)
    assert not router.requires_key
    caller = router.authenticate("Bearer sk-client-own-key", None)
    assert caller == Caller(None, "default", "Bearer sk-client-own-key")
    assert router.authenticate(None, None) == Caller()
    assert router.routes[0].upstream.auth_headers(caller.authorization) == {
        "authorization": "Bearer sk-client-own-key"
    }


@pytest.mark.parametrize(
    ("path", "model", "key", "route"),
    [
        ("/v1/chat/completions", "qwen-max", "team-a", "qwen-team-a"),
        ("/v1/chat/completions", "qwen-max", "team-b", "qwen-any"),
        ("/v1/completions", "qwen-max", "team-a", "qwen-any"),  # outside /v1/chat
        ("/v1/chat/completions", "gpt-4o", "team-a", "/*"),
        ("/v1/chat/completions", "Qwen-max", "team-a", "/*"),  # globs are case-sensitive
        ("/v1/chat/completions", None, "team-a", "/*"),  # no model: model routes do not match
        ("/v1/embeddings", "qwen-embed", "team-b", "qwen-any"),  # first match wins
        ("/v1/embeddings", "text-embedding-3", "team-b", "embeddings"),
        ("/v1/embeddings", None, "team-a", "embeddings"),
    ],
)
def test_resolve(router: Router, path: str, model: str | None, key: str, route: str) -> None:
    caller = router.authenticate(None, KEY_A if key == "team-a" else KEY_B)
    resolved = router.resolve(path, model, caller)
    assert resolved.name == route
    assert router.policy_for(path, model, caller) is resolved.policy


def test_resolve_picks_upstream_and_policy(router: Router) -> None:
    caller = router.authenticate(f"Bearer {KEY_A}", None)
    route = router.resolve("/v1/chat/completions", "qwen-72b", caller)
    assert route.upstream.name == "qwen"
    assert route.policy.name == "strict"
    assert router.resolve("/v1/chat/completions", "gpt-4o", caller).upstream.name == "openai"


async def test_no_matching_route(tmp_path: Path, clients: list[httpx.AsyncClient]) -> None:
    text = (
        "upstreams:\n  main: {base_url: 'http://x/v1'}\n"
        "keys: [{name: a, key: '0123456789abcdef', tenant: t},\n"
        "       {name: b, key: 'fedcba9876543210', tenant: t}]\n"
        "routes:\n  - {path_prefix: /v1/chat, model: 'qwen-*', keys: [a], upstream: main, policy: only}\n"
    )
    router = build_router(load_config(write(tmp_path, text)), clients)
    a, b = router.authenticate(None, "0123456789abcdef"), router.authenticate(None, "fedcba9876543210")
    assert router.resolve("/v1/chat/completions", "qwen-7b", a).policy.name == "only"
    for path, model, caller in [
        ("/v1/chat/completions", "qwen-7b", b),
        ("/v1/chat/completions", "deepseek-chat", a),
        ("/v1/embeddings", "qwen-7b", a),
    ]:
        with pytest.raises(NotFound) as info:
            router.resolve(path, model, caller)
        assert path in info.value.message
        assert router.policy_for(path, model, caller).name == "fallback"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/files/file-abc", True),
        ("/v1/files/file-abc/content", True),
        ("/v1/files/", True),
        ("/v1/files", False),
        ("/v1/filesystem", False),
        ("/v1/batches", True),
        ("/v1/batches/batch_1", False),
        ("/v1/batche", False),
        ("/v1/chat/completions", False),
        ("/v1/models", False),
    ],
)
def test_passthrough(router: Router, path: str, allowed: bool) -> None:
    assert router.passthrough(path) is allowed


@pytest.mark.parametrize("path", ["/v1/files/../chat/completions", "/v1/files/./../../v1/chat/completions"])
def test_passthrough_refuses_dot_segments(router: Router, path: str) -> None:
    assert router.passthrough(path) is False


def test_dot_segments_reach_another_upstream_endpoint(router: Router) -> None:
    """Why the dot-segment check matters: the upstream URL of such a path is the chat endpoint."""
    upstream = router.routes[3].upstream
    request = upstream.client.build_request("POST", upstream.url("/v1/files/../chat/completions"))
    assert request.url.path == "/v1/chat/completions"


# --- upstreams -------------------------------------------------------------------------------


def test_upstream_url(router: Router) -> None:
    qwen, openai = router.routes[0].upstream, router.routes[3].upstream
    assert qwen.url("/v1/chat/completions") == "http://qwen.internal:8000/v1/chat/completions"
    assert openai.url("/v1/chat/completions") == "https://api.openai.example/v1/chat/completions"
    assert openai.url("/v1/files/file-1/content") == "https://api.openai.example/v1/files/file-1/content"


def test_upstream_key_wins_over_the_clients(router: Router) -> None:
    qwen, openai = router.routes[0].upstream, router.routes[3].upstream
    assert qwen.auth_headers("Bearer sk-client") == {
        "x-org": "org-组织-42",
        "authorization": "Bearer sk-upstream-qwen-secret",
    }
    assert qwen.auth_headers(None)["authorization"] == "Bearer sk-upstream-qwen-secret"
    assert openai.auth_headers("Bearer sk-client") == {"authorization": "Bearer sk-client"}
    assert openai.auth_headers(None) == {}


def test_route_names(router: Router) -> None:
    assert [r.name for r in router.routes] == ["qwen-team-a", "qwen-any", "embeddings", "/*"]


# --- the open-proxy warning ------------------------------------------------------------------

OPEN = (
    "upstreams:\n  main: {base_url: 'http://x/v1', api_key: sk-upstream-secret}\nroutes: [{upstream: main}]\n"
)


def test_open_proxy_warning(
    tmp_path: Path, clients: list[httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.routing"):
        build_router(load_config(write(tmp_path, OPEN)), clients)
    [record] = [r for r in caplog.records if "OPEN PROXY" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "sk-upstream-secret" not in caplog.text


@pytest.mark.parametrize(
    "text",
    [
        OPEN + "keys: [{name: k, key: '0123456789abcdef', tenant: t}]\n",
        "upstreams:\n  main: {base_url: 'http://x/v1'}\nroutes: [{upstream: main}]\n",
    ],
)
def test_no_open_proxy_warning(
    tmp_path: Path, clients: list[httpx.AsyncClient], caplog: pytest.LogCaptureFixture, text: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.routing"):
        build_router(load_config(write(tmp_path, text)), clients)
    assert "OPEN PROXY" not in caplog.text
