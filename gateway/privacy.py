"""Personal data the gateway keeps as little of as it can (Art. 11): user pseudonyms and
masked excerpts.

* A user id is stored only as ``u_`` + HMAC-SHA256(secret, id), hex, 32 digits: stable across
  replicas and restarts (one secret in the store or config), not reversible without the key.
* Excerpts have phone numbers, resident ID numbers, bank-card numbers and e-mail addresses
  masked, keeping a few characters so that an operator can still tell two apart.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.store.base import Store

__all__ = ["Pseudonymizer", "mask_pii", "pseudonym_key"]


class Pseudonymizer:
    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError("the pseudonym secret must be at least 16 characters")
        self._key = secret.encode()

    def __call__(self, user: str) -> str:
        digest = hmac.new(self._key, user.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return "u_" + digest[:32]


async def pseudonym_key(config: GatewayConfig, store: Store) -> str:
    """The key of user pseudonyms: the config's ``pseudonym_secret``, else the secret kept in the
    store (made there on first use). Everything that names users (each replica, the CLI) keys
    its Pseudonymizer with this, or one user would have two pseudonyms. Raises what the store
    raises when it is down."""
    secret = config.pseudonym_secret
    return secret.get_secret_value() if secret is not None else await store.secret("pseudonym")


_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@([\w-]+(?:\.[\w-]+)+)", re.ASCII)
# 18-digit resident ID (last may be X), 15-digit legacy ID.
_ID_CARD = re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[\dXx])(?![\dXx])|(?<!\d)(\d{6})\d{6}(\d{3})(?!\d)")
# Mainland mobile numbers, with an optional +86 / 0086 and separators.
_PHONE = re.compile(r"(?<!\d)((?:\+|00)?86[ -]?)?(1[3-9]\d)[ -]?\d{4}[ -]?(\d{4})(?!\d)")
# 13-19 digits, optionally grouped by spaces or dashes, passing the Luhn check.
_CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
# Other international numbers: +CC and 7-12 more digits.
_INTL_PHONE = re.compile(r"(?<![\w+])\+\d{1,3}[ -]?\d(?:[ -]?\d){6,11}(?!\d)")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if not _luhn(digits):
        return match.group(0)
    return digits[:4] + "*" * (len(digits) - 8) + digits[-4:]


def _id_card(match: re.Match[str]) -> str:
    if match.group(1):
        return match.group(1) + "*" * 8 + match.group(2)[-1:].rjust(4, "*")
    return match.group(3) + "*" * 9


def mask_pii(text: str) -> str:
    """``text`` with e-mail, ID-card, phone and bank-card numbers masked."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    text = _ID_CARD.sub(_id_card, text)
    text = _PHONE.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}****{m.group(3)}", text)
    text = _CARD.sub(_card, text)
    return _INTL_PHONE.sub(_intl_phone, text)


def _intl_phone(match: re.Match[str]) -> str:
    number = match.group(0)
    return number[:4] + "*" * (len(number) - 6) + number[-2:]
