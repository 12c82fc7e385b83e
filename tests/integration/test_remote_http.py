"""``type: remote`` against real HTTP services on loopback: a scripted moderation and
text-classification server (tests/support/classifier_servers.py) and a real modgate gateway's
``/v1/moderations``. English and Chinese texts on every path."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from classifiers.http import aclose_shared_clients
from classifiers.registry import builtin_registry
from classifiers.remote import RemoteClassifier, RemoteError, RemoteTimeout
from gateway.policy_loader import PolicyError, load_policy
from gateway.screening import Segment, screen
from tests.conftest import GatewayFactory
from tests.support.classifier_servers import ClassifierServer
from tests.support.servers import free_port, serve_in_thread

HARMFUL = ["How do I build a bomb at home?", "教我怎么在家里做炸弹"]
INSULTS = ["you are an idiot", "你这个白痴"]
BENIGN = ["What a lovely day for a walk", "今天天气很好，我们去公园散步吧"]
TC_LABELS = {"toxic": {"code": "A.4.d", "threshold": 0.6}, "obscene": {"code": "A.1.f"}}


@dataclass
class Service:
    server: ClassifierServer
    base: str


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    server = ClassifierServer()
    with serve_in_thread(server.app()) as base:
        yield Service(server, base)


Factory = Callable[..., RemoteClassifier]


@pytest.fixture
async def remote(service: Service) -> AsyncIterator[Factory]:
    """Builds ``type: remote`` classifiers through the registry, as a policy does."""
    service.server.clear()
    registry = builtin_registry()

    def factory(path: str, **params: Any) -> RemoteClassifier:
        url = path if path.startswith("http") else service.base + path
        validated = registry.validate("remote", {"url": url, **params}, Path.cwd())
        clf = registry.build("remote-test", "remote", validated)
        assert isinstance(clf, RemoteClassifier)
        return clf

    yield factory
    await aclose_shared_clients()


async def test_openai_shape_maps_categories_in_both_languages(remote: Factory, service: Service) -> None:
    clf = remote("/v1/moderations", shape="openai-moderation", model="omni-moderation-latest")
    texts = [*HARMFUL, *INSULTS, *BENIGN]
    results = await clf.classify(texts)
    assert service.server.requests[0].body == {"input": texts, "model": "omni-moderation-latest"}
    assert [r.scores.get("A.1.f", 0) > 0.9 for r in results] == [True, True, False, False, False, False]
    assert [round(r.scores.get("A.4.d", 0), 2) for r in results] == [0.02, 0.02, 0.75, 0.75, 0.02, 0.02]
    assert all(max(r.scores.values()) < 0.1 for r in results[4:])
    port = service.base.rsplit(":", 1)[1]
    assert {r.revision for r in results} == {
        f"remote:openai-moderation:127.0.0.1:{port}/v1/moderations:omni-moderation-latest"
    }
    assert {r.classifier for r in results} == {"remote-test"}


async def test_text_classification_all_labels_in_both_languages(remote: Factory, service: Service) -> None:
    clf = remote(
        "/predict", shape="text-classification", labels=TC_LABELS, body={"parameters": {"top_k": None}}
    )
    texts = [*HARMFUL, *BENIGN]
    results = await clf.classify(texts)
    assert service.server.requests[0].body == {"parameters": {"top_k": None}, "inputs": texts}
    # toxic 0.92 at threshold 0.6 calibrates to 0.9; unknown `neutral` is ignored.
    assert [round(r.scores["A.4.d"], 3) for r in results] == [0.9, 0.9, 0.017, 0.017]
    assert {round(r.scores["A.1.f"], 3) for r in results} == {0.03}


async def test_text_classification_top1_and_flat_answers(remote: Factory) -> None:
    top1 = remote(
        "/predict", shape="text-classification", labels=TC_LABELS, body={"parameters": {"top_k": 1}}
    )
    results = await top1.classify([*HARMFUL, *BENIGN])
    # Top-1 only: the benign texts' top label is `neutral` (not mapped), so nothing is scored.
    assert [dict(r.scores) for r in results[2:]] == [{}, {}]
    assert [round(r.scores["A.4.d"], 3) for r in results[:2]] == [0.9, 0.9]
    flat = remote("/predict", shape="text-classification", labels=TC_LABELS, body={"flat": True})
    for text in (HARMFUL[1], BENIGN[0]):
        (only,) = await flat.classify([text])
        assert set(only.scores) == {"A.4.d", "A.1.f"}


async def test_big_batches_split_into_concurrent_requests(remote: Factory, service: Service) -> None:
    clf = remote("/v1/moderations?delay=0.2", shape="openai-moderation", max_batch=2)
    texts = [HARMFUL[0], BENIGN[1], INSULTS[1], HARMFUL[1], BENIGN[0]]
    results = await clf.classify(texts)
    assert sorted(len(r.body["input"]) for r in service.server.requests) == [1, 2, 2]
    assert service.server.max_in_flight == 3
    assert [r.scores["A.1.f"] > 0.9 for r in results] == [True, False, False, True, False]
    assert [r.scores["A.4.d"] > 0.5 for r in results] == [False, False, True, False, False]


@pytest.mark.parametrize("status", [500, 429])
async def test_error_status_raises(remote: Factory, status: int, caplog: pytest.LogCaptureFixture) -> None:
    clf = remote(f"/status/{status}", shape="openai-moderation")
    with pytest.raises(RemoteError, match=f"HTTP {status}") as caught:
        await clf.classify([HARMFUL[0], HARMFUL[1]])
    assert f"reason=HTTP {status}" in caplog.text
    for where in (str(caught.value), caplog.text):  # the reason is named, never the texts
        assert "bomb" not in where and "炸弹" not in where


@pytest.mark.parametrize(
    ("kind", "shape", "message"),
    [
        ("invalid-json", "openai-moderation", "not JSON"),
        ("results-not-list", "openai-moderation", "no 'results' list"),
        ("wrong-count", "openai-moderation", "0 results for 1 texts"),
        ("no-category-scores", "openai-moderation", r"results\[0\] has no 'category_scores'"),
        ("score-not-number", "openai-moderation", "hate: a score is not a number"),
        ("not-list", "text-classification", "not a list"),
        ("tc-wrong-count", "text-classification", "2 results for 1 texts"),
        ("tc-score-not-number", "text-classification", "a score is not a number"),
    ],
)
async def test_malformed_answers_raise(remote: Factory, kind: str, shape: str, message: str) -> None:
    labels = TC_LABELS if shape == "text-classification" else {}
    clf = remote(f"/bad/{kind}", shape=shape, labels=labels)
    for text in (HARMFUL[0], HARMFUL[1]):
        with pytest.raises(RemoteError, match=message):
            await clf.classify([text])


async def test_slow_server_exceeds_request_timeout(remote: Factory) -> None:
    clf = remote("/slow", shape="openai-moderation", request_timeout_s=0.2)
    start = time.monotonic()
    with pytest.raises(RemoteTimeout, match=r"no answer within 0\.2 s") as caught:
        await clf.classify([BENIGN[1]])
    assert time.monotonic() - start < 0.9
    assert isinstance(caught.value, TimeoutError)  # the screener counts it as a timeout


async def test_connection_refused_raises(remote: Factory) -> None:
    clf = remote(f"http://127.0.0.1:{free_port()}/v1/moderations", shape="openai-moderation")
    with pytest.raises(RemoteError, match="ConnectError"):
        await clf.classify([INSULTS[0], INSULTS[1]])


REMOTE_POLICY = """
name: remote-test
classifiers:
  moderation:
    type: remote
    url: {base}/v1/moderations
    shape: openai-moderation
    model: omni-moderation-latest
    headers: {{Authorization: "Bearer ${{MODGATE_TEST_REMOTE_KEY}}"}}
    max_batch: 8
{extra}
rules:
  A.1: {{input: block, output: block}}
  A.4.d: {{input: flag, output: block}}
"""


def write_policy(tmp_path: Path, base: str, extra: str = "") -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(REMOTE_POLICY.format(base=base, extra=extra), encoding="utf-8")
    return path


async def test_policy_with_remote_classifier_screens_with_env_auth(
    remote: Factory, service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODGATE_TEST_REMOTE_KEY", "sk-test-0123")
    policy = load_policy(write_policy(tmp_path, service.base))
    for text in HARMFUL:
        decision = await screen(policy, [Segment(text, "user")], "input")
        assert decision.action == "block", decision.risks()
        assert [(h.code, h.classifier) for h in decision.hits] == [("A.1.f", "moderation")]
    for text in INSULTS:
        assert (await screen(policy, [Segment(text, "user")], "input")).action == "flag"
    for text in BENIGN:
        assert (await screen(policy, [Segment(text, "user")], "input")).action == "allow"
    assert {r.headers["authorization"] for r in service.server.requests} == {"Bearer sk-test-0123"}
    clf = policy.classifiers["moderation"]
    assert isinstance(clf, RemoteClassifier) and "sk-test" not in clf.revision


def test_unset_header_variable_fails_at_policy_load(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MODGATE_TEST_REMOTE_KEY", raising=False)
    with pytest.raises(PolicyError, match=r"classifiers\.moderation.*MODGATE_TEST_REMOTE_KEY is not set"):
        load_policy(write_policy(tmp_path, service.base))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    max_batchs: 4", r"classifiers\.moderation\.max_batchs: Extra inputs are not permitted"),
        ("    shape: sentiment", r"classifiers\.moderation\.shape: Input should be 'openai-moderation'"),
    ],
)
def test_bad_remote_entry_is_refused_with_its_key(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, message: str
) -> None:
    monkeypatch.setenv("MODGATE_TEST_REMOTE_KEY", "sk-test-0123")
    text = REMOTE_POLICY.format(base=service.base, extra="")
    if "shape" in extra:
        text = text.replace("    shape: openai-moderation\n", extra + "\n")
    else:
        text = text.replace("    max_batch: 8\n", "    max_batch: 8\n" + extra + "\n")
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError, match=message):
        load_policy(path)


GATEWAY_POLICY = """
name: keywords-only
classifiers:
  banned-terms:
    type: lexicon
    terms:
      A.1.d: ["zorblax", "炸药配方"]
      X.test_flag: ["flagword", "标记词"]
rules:
  A.1.d: {input: block, output: block}
  X.test_flag: {input: flag, output: flag}
"""


async def test_another_modgate_passes_its_risk_codes_through(
    remote: Factory, make_gateway: GatewayFactory
) -> None:
    gateway = make_gateway(policy=GATEWAY_POLICY)
    clf = remote(f"{gateway.base}/v1/moderations", shape="openai-moderation")
    texts = ["how do I get zorblax", "炸药配方是什么", "a flagword here", "这里有标记词", *BENIGN]
    results = await clf.classify(texts)
    assert [dict(r.scores) for r in results] == [
        {"A.1.d": 1.0}, {"A.1.d": 1.0}, {"X.test_flag": 1.0}, {"X.test_flag": 1.0}, {}, {},
    ]  # fmt: skip
