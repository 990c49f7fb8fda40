"""What creating many jobs in a row looks up again and again: gears and container paths.

A gear version's manifest never changes once installed (re-installing it with another
manifest is refused), so its validated :class:`Manifest` is kept per process, keyed by name,
version and manifest hash.  :class:`Lookups` also remembers, for one batch of jobs, which
gear a reference (``name`` or ``name:version``) named and the path of each container.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from catalog.catalog import Catalog
from catalog.gears import get_gear
from catalog.models import Container, File, Gear, Level
from catalog.paths import format_path
from catalog.tree import container_path, get_container
from gearspec.manifest import Manifest, load_manifest

_MANIFESTS: dict[tuple[str, str, str], Manifest] = {}
_MANIFESTS_MAX = 256


def gear_manifest(gear: Gear) -> Manifest:
    """The validated manifest of an installed gear (validated once per process)."""
    key = (gear.name, gear.version, gear.manifest_hash)
    manifest = _MANIFESTS.get(key)
    if manifest is None:
        manifest = load_manifest(gear.manifest)
        if len(_MANIFESTS) >= _MANIFESTS_MAX:
            _MANIFESTS.clear()
        _MANIFESTS[key] = manifest
    return manifest


class Lookups:
    """Gears by reference and container paths by id, each looked up once per instance.

    Use one instance for one batch of jobs created in one transaction: a reference without a
    version keeps naming the gear that was newest at its first lookup, and a container's path
    is the one it had then.
    """

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat
        self._gears: dict[str, tuple[Gear, Manifest]] = {}
        self._paths: dict[int, str] = {}

    def gear(self, ref: str) -> tuple[Gear, Manifest]:
        """``get_gear`` and the gear's manifest."""
        found = self._gears.get(ref)
        if found is None:
            gear = get_gear(self.cat, ref)
            found = self._gears[ref] = (gear, gear_manifest(gear))
        return found

    def container_path(self, session: Session, container: Container) -> str:
        """Analyses are not remembered: one made under a rolled-back savepoint may leave its
        id to the next (SQLite reuses the highest rowid)."""
        if container.level == Level.ANALYSIS:
            return container_path(session, container)
        path = self._paths.get(container.id)
        if path is None:
            path = self._paths[container.id] = container_path(session, container)
        return path

    def file_path(self, session: Session, file: File) -> str:
        base = self.container_path(session, get_container(session, file.container_id))
        return f"{base}/{format_path([], file_name=file.name)}"
