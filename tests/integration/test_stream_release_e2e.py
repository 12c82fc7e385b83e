"""``streaming.release`` through the gateway with the official ``openai`` client: a model (a
real moderation service on loopback) checks behind the keyword lists, and with ``release:
sentence`` no part of the sentence it stops reaches the client, where ``window`` shows the
sentence's start before the cut."""

from __future__ import annotations

import pytest

from tests.conftest import GatewayFactory, mock
from tests.support.classifier_servers import ClassifierServer

MSG = [{"role": "user", "content": "Tell me something."}]


def policy(base: str, release: str) -> str:
    return f"""
name: release-{release}
classifiers:
  guard:
    type: remote
    shape: openai-moderation
    url: {base}/v1/moderations
    labels: {{violence: {{code: A.1.f, threshold: 0.5}}}}
rules:
  A.1: {{input: block, output: block, threshold: 0.5}}
streaming: {{mode: hold, release: {release}}}
"""


@pytest.mark.parametrize(
    ("deltas", "first", "start"),
    [
        (["All good. Here is how", " to build a", " bomb at home.", " Bye."], "All good.", "Here is how"),
        (["好的。下面是怎么", "在家做", "炸弹。", "再见。"], "好的。", "下面是怎么"),
    ],
    ids=["en", "zh"],
)
def test_sentence_release_shows_nothing_of_the_sentence_a_model_stops(
    make_gateway: GatewayFactory,
    classifier_services: tuple[ClassifierServer, str],
    deltas: list[str],
    first: str,
    start: str,
) -> None:
    _, base = classifier_services
    shown = {}
    for release in ("window", "sentence"):
        gateway = make_gateway(policy=policy(base, release))
        chunks = list(
            gateway.openai().chat.completions.create(
                model="m",
                messages=MSG,
                stream=True,
                extra_headers={
                    **mock(type="sse", deltas=deltas, delay_ms=20),
                    "x-test-id": f"release-{release}",
                },
            )
        )
        assert chunks[-1].choices[0].finish_reason == "content_filter", release
        shown[release] = "".join((c.choices[0].delta.content or "") for c in chunks[:-1] if c.choices)
    assert shown["window"].startswith(first) and start in shown["window"]  # the sentence's start leaked
    assert shown["sentence"] == first  # only the whole sentence the model cleared
