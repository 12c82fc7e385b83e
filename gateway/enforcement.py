"""The user enforcement ladder (Interim Measures Art. 14 ¶2), on top of the store's users.

* **Who**: the chat body's ``user``, else the ``X-Modgate-User`` header, else the API key's
  ``user`` mapping (:func:`identify`); no user, no enforcement. Only the pseudonym (HMAC, see
  ``gateway.privacy``) reaches the store, the logs and the incidents.
* **Strikes**: every decision with action ``block`` or ``refuse`` (input, output, a stream
  cut) is one strike, committed before the response is sent. The strikes within the policy's
  ``enforcement.window`` pick the ladder step; reaching a stronger step records a status change.
* **Standing**: a suspension or restriction holds until its ``for:`` ends (or an admin
  reinstates); a warning holds while the strikes that gave it are in the window. When a timed
  status ends, the user falls back to the strongest *lower* step the current strikes reach, so
  an expired suspension is not renewed by the strikes that caused it; the next strike is.
* **Check** (before screening): suspended → 403 ``user_suspended``; restricted → the request is
  counted and over the step's rate answered 429 ``user_restricted``; warned and restricted
  responses carry the notice: ``x-modgate-notice`` holds the policy's ``warning`` text,
  percent-encoded UTF-8 (``urllib.parse.unquote`` reads it), and ``x-modgate-user-status``
  the status (``warned`` or ``restricted``).
* A store failure never fails the request: the check lets it through to screening, a strike
  is lost; both are logged (pseudonym and incident id only) and counted in
  ``modgate_store_errors_total``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from gateway.duties import EnforcementSettings, LadderStep
from gateway.errors import UserRestricted, UserSuspended
from gateway.metrics import Metrics
from gateway.records import STATUS_RANK, UserRecord, UserStatus
from gateway.store.base import UserStore

__all__ = [
    "NOTICE_HEADER",
    "STATUS_HEADER",
    "Enforcer",
    "Standing",
    "identify",
    "standing",
]

log = logging.getLogger("modgate.enforcement")

NOTICE_HEADER = "x-modgate-notice"
STATUS_HEADER = "x-modgate-user-status"

_STATUS: dict[str, UserStatus] = {"warn": "warned", "restrict": "restricted", "suspend": "suspended"}
#: For a user an admin restricted under a policy whose ladder has no restrict step.
FALLBACK_RATE = (10, 60.0)


def identify(body_user: str | None, header_user: str | None, key_user: str | None) -> str | None:
    """The raw user id a request names, by precedence: body, header, API key; None for none."""
    for candidate in (body_user, header_user, key_user):
        if candidate is not None and candidate.strip():
            return candidate
    return None


@dataclass(frozen=True)
class Standing:
    """A user's status at one moment, and the restriction's rate when restricted."""

    status: UserStatus = "ok"
    until: float | None = None
    rate: tuple[int, float] | None = None

    def notice(self, settings: EnforcementSettings) -> dict[str, str]:
        """Response headers telling a warned or restricted user where they stand."""
        if self.status not in ("warned", "restricted"):
            return {}
        return {NOTICE_HEADER: quote(settings.warning, safe=""), STATUS_HEADER: self.status}


def _rate(settings: EnforcementSettings, strikes: int) -> tuple[int, float]:
    restricts = [s for s in settings.ladder if s.action == "restrict" and s.rate is not None]
    reached = [s for s in restricts if s.strikes <= strikes]
    step = reached[-1] if reached else (restricts[0] if restricts else None)
    return step.rate if step is not None and step.rate is not None else FALLBACK_RATE


def standing(
    record: UserRecord | None, settings: EnforcementSettings, now: float, strikes: int | None = None
) -> Standing:
    """Where ``record`` stands at ``now``; ``strikes`` overrides the count in the window."""
    if record is None:
        return Standing()
    if strikes is None:
        strikes = sum(1 for at in record.strikes if at >= now - settings.window)
    live = record.until is None or record.until > now
    if record.status in ("restricted", "suspended") and live:
        rate = _rate(settings, strikes) if record.status == "restricted" else None
        return Standing(record.status, record.until, rate)
    # A timed status that ended caps the fallback below it (see the module docstring).
    cap = STATUS_RANK[record.status] if record.status in ("restricted", "suspended") else len(STATUS_RANK)
    steps = [s for s in settings.ladder if s.strikes <= strikes and STATUS_RANK[_STATUS[s.action]] < cap]
    if not steps:
        return Standing()
    status = _STATUS[steps[-1].action]
    return Standing(status, None, _rate(settings, strikes) if status == "restricted" else None)


def _iso(at: float | None) -> str:
    return "further notice" if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


class Enforcer:
    """Checks and strikes users against a policy's ladder; one per app, shared by requests."""

    def __init__(self, users: UserStore, metrics: Metrics) -> None:
        self.users = users
        self.metrics = metrics

    async def check(self, user: str, settings: EnforcementSettings) -> Standing:
        """Raise :class:`UserSuspended` or :class:`UserRestricted`, or return the standing."""
        now = time.time()
        try:
            current = standing(await self.users.get(user, history=False), settings, now)
        except Exception:
            self._store_failed("user_check", user)
            return Standing()
        if current.status == "suspended":
            self.metrics.child(self.metrics.enforcement_actions, "rejected_suspended").inc()
            raise UserSuspended(
                f"this user is suspended for repeated content-policy violations until {_iso(current.until)}",
                modgate={"user_status": "suspended", "until": current.until},
            )
        if current.status == "restricted" and current.rate is not None:
            limit, period = current.rate
            try:
                allowed = await self.users.hit_rate(user, limit, period, now)
            except Exception:
                self._store_failed("user_rate", user)
                allowed = True
            if not allowed:
                self.metrics.child(self.metrics.enforcement_actions, "rejected_restricted").inc()
                error = UserRestricted(
                    f"this user is restricted to {limit} requests per {period:g} s "
                    "for repeated content-policy violations",
                    modgate={"user_status": "restricted", "until": current.until},
                )
                error.headers.update(current.notice(settings))
                # The sliding window frees a slot at the latest one period on: SDKs that honour
                # Retry-After (the OpenAI ones do) then wait instead of hammering.
                error.headers["retry-after"] = str(math.ceil(period))
                raise error
        return current

    async def strike(self, user: str, settings: EnforcementSettings, incident_id: str) -> Standing | None:
        """One strike for ``incident_id``; climbs the ladder when a stronger step is reached.
        The standing afterwards, or None when the store failed to take the strike."""
        now = time.time()
        try:
            record = await self.users.strike(user, now, settings.window, detail=f"incident {incident_id}")
        except Exception:
            self._store_failed("strike", user, incident_id)
            return None
        count = sum(1 for at in record.strikes if at >= now - settings.window)
        before = standing(record, settings, now, strikes=count - 1)
        step = settings.step_for(count)
        if step is None or STATUS_RANK[_STATUS[step.action]] <= STATUS_RANK[before.status]:
            return standing(record, settings, now, count)
        try:
            record = await self._climb(user, step, count, incident_id, now)
        except Exception:
            # The strike is stored: the standing derived from the strikes still applies.
            self._store_failed("user_status", user, incident_id)
        return standing(record, settings, now, count)

    async def _climb(
        self, user: str, step: LadderStep, count: int, incident_id: str, now: float
    ) -> UserRecord:
        until = now + step.duration if step.duration is not None else None
        record = await self.users.set_status(
            user,
            _STATUS[step.action],
            until,
            "gateway",
            f"{count} strikes; incident {incident_id}",
            at=now,
            escalate=True,
        )
        self.metrics.child(self.metrics.enforcement_actions, step.action).inc()
        log.info(
            "user %s user=%s strikes=%d until=%s incident=%s", step.action, user, count, until, incident_id
        )
        return record

    def _store_failed(self, operation: str, user: str, incident_id: str | None = None) -> None:
        log.exception(
            "enforcement store failure operation=%s user=%s incident=%s", operation, user, incident_id
        )
        self.metrics.child(self.metrics.store_errors, operation).inc()
