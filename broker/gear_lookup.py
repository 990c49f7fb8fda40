"""Installed gears with their parsed manifests, for creating many jobs in a row.

A gear version's manifest never changes once installed (re-installing it with another
manifest is refused), so its validated :class:`Manifest` is kept per process, keyed by name,
version and manifest hash.  :class:`GearLookup` also remembers which gear a reference
(``name`` or ``name:version``) named, for one pass of job creation.
"""

from __future__ import annotations

from catalog.catalog import Catalog
from catalog.gears import get_gear
from catalog.models import Gear
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


class GearLookup:
    """``get_gear`` plus the parsed manifest, each reference looked up once per instance.

    Use one instance for one batch of work: a reference without a version keeps naming the
    gear that was newest when it was first looked up.
    """

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat
        self._found: dict[str, tuple[Gear, Manifest]] = {}

    def __call__(self, ref: str) -> tuple[Gear, Manifest]:
        found = self._found.get(ref)
        if found is None:
            gear = get_gear(self.cat, ref)
            found = self._found[ref] = (gear, gear_manifest(gear))
        return found
