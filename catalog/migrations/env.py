"""Alembic environment: runs against the engine handed over in ``config.attributes``."""

from __future__ import annotations

from typing import Any

from alembic import context

from catalog.models import Base, UTCDateTime

config = context.config


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Write model-only column types as plain SQLAlchemy types, so migrations never import
    the models (UTCDateTime is DateTime(timezone=True) in the database)."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
