"""Per-invocation CLI state: settings loaded once, the catalog opened on first use."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from broker.config import Settings, load_settings
from catalog.catalog import Catalog


@dataclass
class CliState:
    flags: dict[str, Any]
    config_path: str | None = None
    _settings: Settings | None = field(default=None, repr=False)
    _catalog: Catalog | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            path = Path(self.config_path) if self.config_path else None
            self._settings = load_settings(flags=self.flags, path=path)
        return self._settings

    def store_options(self) -> dict[str, Any]:
        endpoint = self.settings.store_endpoint_url
        return {"endpoint_url": endpoint} if endpoint else {}

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            s = self.settings
            self._catalog = Catalog.open(
                s.database_url, s.store_url, s.user, **self.store_options()
            )
        return self._catalog

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None


def state() -> CliState:
    obj = click.get_current_context().find_root().obj
    assert isinstance(obj, CliState)
    return obj
