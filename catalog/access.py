"""Who is acting, and what their role allows.

Roles are granted on a group (inherited by all its projects) or on a project; the effective
role on any container is the strongest of the grants on its group and its project.  A site
admin (``User.is_admin``) may do everything.  Checks happen in the catalog API, so every
client (CLI, broker, ingest) is held to them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.errors import PermissionDeniedError
from catalog.models import Container, Level, Role, RoleName, User

_RANK = {RoleName.READ_ONLY: 1, RoleName.READ_WRITE: 2, RoleName.ADMIN: 3}


@dataclass(frozen=True)
class Actor:
    """The user on whose behalf the catalog acts."""

    user_id: int
    username: str
    is_admin: bool


def get_or_create_user(session: Session, username: str, *, is_admin: bool = False) -> User:
    """Return the user row, creating it (without roles) on first sight."""
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    if user is None:
        user = User(username=username, is_admin=is_admin)
        session.add(user)
        session.flush()
    return user


def actor_for(session: Session, username: str) -> Actor:
    user = get_or_create_user(session, username)
    return Actor(user_id=user.id, username=user.username, is_admin=user.is_admin)


def scope_ids(container: Container) -> list[int]:
    """The group and project ids whose grants apply to ``container``."""
    ids: list[int] = []
    level = Level(container.level)
    if level is Level.GROUP:
        ids.append(container.id)
    else:
        if container.group_id is not None:
            ids.append(container.group_id)
        if level is Level.PROJECT:
            ids.append(container.id)
        elif container.project_id is not None:
            ids.append(container.project_id)
    return ids


def effective_role(session: Session, actor: Actor, container: Container) -> RoleName | None:
    """The strongest role ``actor`` holds over ``container`` (None: no access)."""
    if actor.is_admin:
        return RoleName.ADMIN
    roles = session.scalars(
        select(Role.role).where(
            Role.user_id == actor.user_id, Role.container_id.in_(scope_ids(container))
        )
    ).all()
    if not roles:
        return None
    return max((RoleName(r) for r in roles), key=_RANK.__getitem__)


def require(session: Session, actor: Actor, container: Container, needed: RoleName) -> None:
    """Raise PermissionDeniedError unless ``actor`` holds at least ``needed`` on ``container``."""
    have = effective_role(session, actor, container)
    if have is None or _RANK[have] < _RANK[needed]:
        what = {
            RoleName.READ_ONLY: "read",
            RoleName.READ_WRITE: "write to",
            RoleName.ADMIN: "administer",
        }[needed]
        held = f"role {have.value!r}" if have else "no role"
        raise PermissionDeniedError(
            f"user {actor.username!r} may not {what} {container.level} {container.label!r} ({held})"
        )


def readable_scope_ids(session: Session, actor: Actor) -> list[int] | None:
    """Group/project ids the actor can read; None means everything (site admin)."""
    if actor.is_admin:
        return None
    return list(session.scalars(select(Role.container_id).where(Role.user_id == actor.user_id)))
