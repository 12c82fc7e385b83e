"""Pseudonyms and PII masking: what stored incidents may hold about a person."""

from __future__ import annotations

import pytest

from gateway.privacy import Pseudonymizer, mask_pii


def test_pseudonym_is_stable_keyed_and_not_the_id() -> None:
    one, other = Pseudonymizer("k" * 32), Pseudonymizer("j" * 32)
    assert one("alice") == one("alice")
    assert one("alice") != one("bob")
    assert one("alice") != other("alice")
    assert one("张三").startswith("u_") and len(one("张三")) == 34
    assert "alice" not in one("alice")


def test_pseudonym_secret_must_be_long() -> None:
    with pytest.raises(ValueError, match="16 characters"):
        Pseudonymizer("short")


@pytest.mark.parametrize(
    ("text", "masked", "gone"),
    [
        ("我的手机号是13812345678，请回电", "我的手机号是138****5678，请回电", "13812345678"),
        ("call +86 138-1234-5678 now", "call +86 138****5678 now", "1234"),
        ("邮箱 zhang.san@example.com.cn 收", "邮箱 z***@example.com.cn 收", "zhang.san"),
        ("mail bob+x@mail.example.org", "mail b***@mail.example.org", "bob+x"),
        ("身份证号110101199003077654。", "身份证号110101***********4。", "19900307"),
        ("ID 11010119900307765X", "ID 110101***********X", "19900307"),
        ("卡号 4111 1111 1111 1111 到期", "卡号 4111********1111 到期", "1111 1111 1111"),
        ("card 6011000990139424", "card 6011********9424", "00099013"),
    ],
)
def test_pii_is_masked(text: str, masked: str, gone: str) -> None:
    assert mask_pii(text) == masked
    assert gone not in mask_pii(text)


@pytest.mark.parametrize(
    "text",
    [
        "order 1234567890123 shipped",  # 13 digits failing Luhn: not a card
        "在2024年3月有1200人参加",
        "how do I kill a Python process?",
        "版本号 3.11.4，端口 6379",
    ],
)
def test_ordinary_numbers_stay(text: str) -> None:
    assert mask_pii(text) == text


def test_incident_excerpt_is_masked_and_never_cuts_a_number_in_half() -> None:
    from classifiers.base import Span
    from gateway.incidents import EXCERPT_CONTEXT, build_incident
    from gateway.screening import Decision, Hit, Segment

    # The context window ends inside the card number and starts inside the phone number.
    lead = "电话13812345678" + "x" * (EXCERPT_CONTEXT - 5)
    text = (
        lead + "炸药配方" + "y" * (EXCERPT_CONTEXT - 6) + "卡号 4111 1111 1111 1111，邮箱 li.si@example.com"
    )
    start = len(lead)
    hit = Hit("A.1.d", 1.0, "banned-terms", "block", 0, (Span(start, start + 4, "A.1.d"),))
    decision = Decision("block", "input", "default", "v1", (hit,))
    incident = build_incident(
        decision, [Segment(text, "user")], request_id="r", tenant="t", route="x", model=None
    )
    assert "炸药配方" in incident.excerpt
    assert "138****5678" in incident.excerpt and "12345678" not in incident.excerpt
    assert "4111********1111" in incident.excerpt and "1111 1111" not in incident.excerpt
    assert "li.si" not in incident.excerpt
    assert incident.offsets == [[start, start + 4]]
