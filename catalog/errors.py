"""The error hierarchy every gearbroker package raises from.

The catalog is the lowest layer, so the root class lives here and every other
package (gearspec, broker, backends, ingest) subclasses it.  Library code only
raises; the CLI alone maps these classes to exit codes and messages.
"""

from __future__ import annotations


class GearbrokerError(Exception):
    """Root of every error gearbroker raises on purpose."""


class ConfigError(GearbrokerError):
    """A configuration file, variable or flag is missing or malformed."""


class InvalidInputError(GearbrokerError):
    """User-supplied input (a label, a path, a value, a query) is malformed."""


class PathError(InvalidInputError):
    """A hierarchy path cannot be parsed or does not fit the hierarchy."""


class QueryError(InvalidInputError):
    """A search query does not parse or names an unknown field."""


class NotFoundError(GearbrokerError):
    """The named object (container, file, gear, job, user) does not exist."""


class ConflictError(GearbrokerError):
    """The change would clash with existing state (duplicate label, version clash)."""


class PermissionDeniedError(GearbrokerError):
    """The acting user's role does not allow the operation."""


class DatabaseError(GearbrokerError):
    """The catalog database cannot be opened or used."""


class SchemaOutdatedError(DatabaseError):
    """The database schema is older (or newer) than this version of the code."""


class StoreError(GearbrokerError):
    """The blob store cannot read, write or verify a blob."""
