"""The audit trail: one append-only AuditEvent per mutation or download."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from catalog.access import Actor
from catalog.models import AuditEvent


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
