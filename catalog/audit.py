"""The audit trail: one append-only AuditEvent per mutation or download."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from catalog.access import Actor
from catalog.models import AuditEvent

#: One event of :func:`record_many`: (target type, target id, path, detail).
Event = tuple[str, int | None, str | None, dict[str, Any]]


def record_many(session: Session, actor: Actor, action: str, events: Sequence[Event]) -> None:
    """Many :func:`record` of one actor and action in one statement; each event is
    ``(target_type, target_id, path, detail)``."""
    if events:
        session.execute(
            insert(AuditEvent),
            [
                {
                    "username": actor.username,
                    "action": action,
                    "target_type": kind,
                    "target_id": target,
                    "path": path,
                    "detail": detail,
                }
                for kind, target, path, detail in events
            ],
        )


def record(
    session: Session,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: int | None,
    path: str | None = None,
    **detail: Any,
) -> None:
    """Add an audit event to the session's transaction (committed with the change itself)."""
    session.add(
        AuditEvent(
            username=actor.username,
            action=action,
            target_type=target_type,
            target_id=target_id,
            path=path,
            detail=detail,
        )
    )
