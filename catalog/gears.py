"""The gear registry: installed gear versions side by side, newest by semantic version.

The catalog stores what the gear spec layer validated (manifest, hash, image); it does not
parse manifests itself.  Installing the same name and version with a different manifest is
refused, so a version always means one manifest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from catalog import audit
from catalog.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from catalog.models import Gear, Job
from catalog.versions import version_key

if TYPE_CHECKING:
    from catalog.catalog import Catalog


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name[:version]`` -> (name, version or None)."""
    name, sep, version = ref.partition(":")
    if not name or (sep and not version):
        raise InvalidInputError(f"invalid gear reference {ref!r}: use NAME or NAME:VERSION")
    return name, version or None


def install_gear(
    cat: Catalog,
    manifest: dict[str, Any],
    manifest_hash: str,
    image: str | None,
    image_digest: str | None = None,
) -> tuple[Gear, bool]:
    """Install a validated manifest; returns (gear, created).  Site admins only."""
    if not cat.actor.is_admin:
        raise PermissionDeniedError(f"user {cat.actor.username!r}: only site admins install gears")
    name, version = str(manifest["name"]), str(manifest["version"])
    with cat.db.session() as session:
        existing = session.scalars(
            select(Gear).where(Gear.name == name, Gear.version == version)
        ).one_or_none()
        if existing is not None:
            if existing.manifest_hash != manifest_hash:
                raise ConflictError(
                    f"gear {name}:{version} is installed with a different manifest; "
                    "bump the version to install a changed gear"
                )
            if image and existing.image != image:
                raise ConflictError(
                    f"gear {name}:{version} is installed with image {existing.image!r}, "
                    f"not {image!r}"
                )
            return existing, False
        gear = Gear(
            name=name,
            version=version,
            label=str(manifest.get("label", "")),
            manifest=manifest,
            manifest_hash=manifest_hash,
            image=image,
            image_digest=image_digest,
            created_by=cat.actor.username,
        )
        session.add(gear)
        session.flush()
        audit.record(
            session,
            cat.actor,
            "gear.install",
            "gear",
            gear.id,
            f"{name}:{version}",
            manifest_hash=manifest_hash,
            image=image,
        )
        return gear, True


def list_gears(cat: Catalog, name: str | None = None, all_versions: bool = False) -> list[Gear]:
    """Installed gears sorted by name, newest version first (only the newest unless asked)."""
    with cat.db.session(readonly=True) as session:
        stmt = select(Gear)
        if name:
            stmt = stmt.where(Gear.name == name)
        gears = list(session.scalars(stmt))
    gears.sort(key=lambda g: version_key(g.version), reverse=True)
    gears.sort(key=lambda g: g.name)
    if all_versions:
        return gears
    seen: set[str] = set()
    return [g for g in gears if not (g.name in seen or seen.add(g.name))]  # type: ignore[func-returns-value]


def get_gear(cat: Catalog, ref: str) -> Gear:
    """The gear ``name:version``, or the newest installed version of ``name``."""
    name, version = parse_ref(ref)
    candidates = [
        g
        for g in list_gears(cat, name, all_versions=True)
        if version is None or g.version == version
    ]
    if version is None:
        candidates = [g for g in candidates if not g.disabled] or candidates
    if not candidates:
        raise NotFoundError(f"gear {ref!r} is not installed (see `gearbroker gear list`)")
    return candidates[0]


def remove_gear(cat: Catalog, ref: str) -> Gear:
    """Remove a gear version that no job used; otherwise it is kept for provenance."""
    if not cat.actor.is_admin:
        raise PermissionDeniedError(f"user {cat.actor.username!r}: only site admins remove gears")
    gear = get_gear(cat, ref)
    with cat.db.session() as session:
        used = session.scalar(select(func.count()).select_from(Job).where(Job.gear_id == gear.id))
        if used:
            raise ConflictError(
                f"gear {gear.name}:{gear.version} ran {used} job(s); it stays installed for their "
                "provenance (install a newer version instead)"
            )
        row = session.get(Gear, gear.id)
        session.delete(row)
        audit.record(
            session, cat.actor, "gear.remove", "gear", gear.id, f"{gear.name}:{gear.version}"
        )
    return gear
