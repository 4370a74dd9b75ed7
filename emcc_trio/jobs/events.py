"""A job's event log and what it says: the events are JSON objects appended in order, and
a job's state is a fold over them. Pure: no I/O here.

    {"event": "created", "kind": "compile" | "run", "owner": name | null,
     "createdAt": unix seconds, "ttlSeconds": n}
    {"event": "state", "state": "queued" | "running"}
    {"event": "output", "text": "..."}            what the compiler printed, a line at a time
    {"event": "diagnostic", ...}                   one of clang's diagnostics, as it came
    {"event": "cancel"}                            DELETE asked for it (any replica)
    {"event": "result", "state": "done" | "failed" | "cancelled", "status": N, "body": {...}}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final, Literal

import attrs

State = Literal["queued", "running", "done", "failed", "cancelled"]
FINAL_STATES: Final = frozenset({"done", "failed", "cancelled"})
KINDS: Final = ("compile", "run")


@attrs.frozen
class JobView:
    """What GET /jobs/<id> answers about a job."""

    kind: str
    owner: str | None
    created_at: float
    ttl_seconds: float
    state: State
    cancel_requested: bool = False
    status: int | None = None  # with the result: the status the synchronous route answers
    body: dict[str, Any] | None = None  # with the result: the body it answers

    def to_json(self, job_id: str) -> dict[str, Any]:
        found: dict[str, Any] = {
            "ok": True,
            "id": job_id,
            "kind": self.kind,
            "state": self.state,
            "createdAt": round(self.created_at, 3),
            "expiresAt": round(self.created_at + self.ttl_seconds, 3),
        }
        if self.status is not None:
            found["status"] = self.status
            found["result"] = self.body
        return found


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def decode(data: bytes) -> dict[str, Any] | None:
    """One stored event, or None for anything that is not one (it is skipped)."""
    try:
        event = json.loads(data)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


def created(kind: str, owner: str | None, created_at: float, ttl_seconds: float) -> bytes:
    return encode(
        {
            "event": "created",
            "kind": kind,
            "owner": owner,
            "createdAt": created_at,
            "ttlSeconds": ttl_seconds,
        }
    )


def state(value: State) -> bytes:
    return encode({"event": "state", "state": value})


def result(value: State, status: int, body: dict[str, Any]) -> bytes:
    return encode({"event": "result", "state": value, "status": status, "body": body})


CANCEL: Final = encode({"event": "cancel"})


def fold(log: Sequence[bytes]) -> JobView | None:
    """The job the log describes; None when it has no valid `created` event first."""
    events = [event for event in map(decode, log) if event is not None]
    if not events or events[0]["event"] != "created":
        return None
    first = events[0]
    view = JobView(
        kind=str(first.get("kind")),
        owner=first.get("owner") if isinstance(first.get("owner"), str) else None,
        created_at=float(first.get("createdAt", 0)),
        ttl_seconds=float(first.get("ttlSeconds", 0)),
        state="queued",
    )
    for event in events[1:]:
        if view.state in FINAL_STATES:
            break
        if event["event"] == "state" and event.get("state") in ("queued", "running"):
            view = attrs.evolve(view, state=event["state"])
        elif event["event"] == "cancel":
            view = attrs.evolve(view, cancel_requested=True)
        elif event["event"] == "result" and event.get("state") in FINAL_STATES:
            body = event.get("body")
            view = attrs.evolve(
                view,
                state=event["state"],
                status=int(event.get("status", 500)),
                body=body if isinstance(body, dict) else {},
            )
    return view
