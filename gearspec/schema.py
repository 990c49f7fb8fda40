"""Phase one of manifest validation: the JSON Schema shipped as ``manifest.schema.json``.

The schema follows the Flywheel gear spec (v0.3.0: ``array`` config values and
``output_configuration``) and adds the ``custom.gearbroker`` extension.  jsonschema's
errors are turned into :class:`~gearspec.errors.Issue` objects whose path names the
offending key itself (a missing or unknown key gets its own path).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

from gearspec.errors import Issue, child, json_path

#: Capabilities an executor of gearbroker knows; any other one forbids launching.
KNOWN_CAPABILITIES = frozenset({"networking"})

#: OSI-approved SPDX identifiers Flywheel accepts, newer ``-only``/``-or-later`` forms, and
#: the two non-SPDX values Flywheel allows ("Other" and "Flywheel MSA").
LICENSES = frozenset(
    [
        "0BSD",
        "AAL",
        "AFL-1.1",
        "AFL-1.2",
        "AFL-2.0",
        "AFL-2.1",
        "AFL-3.0",
        "AGPL-3.0",
        "AGPL-3.0-only",
        "AGPL-3.0-or-later",
        "APL-1.0",
        "APSL-1.0",
        "APSL-1.1",
        "APSL-1.2",
        "APSL-2.0",
        "Apache-1.1",
        "Apache-2.0",
        "Artistic-1.0",
        "Artistic-1.0-Perl",
        "Artistic-1.0-cl8",
        "Artistic-2.0",
        "BSD-1-Clause",
        "BSD-2-Clause",
        "BSD-2-Clause-Patent",
        "BSD-3-Clause",
        "BSL-1.0",
        "CATOSL-1.1",
        "CDDL-1.0",
        "CECILL-2.1",
        "CNRI-Python",
        "CPAL-1.0",
        "CPL-1.0",
        "CUA-OPL-1.0",
        "ECL-1.0",
        "ECL-2.0",
        "EFL-1.0",
        "EFL-2.0",
        "EPL-1.0",
        "EPL-2.0",
        "EUDatagrid",
        "EUPL-1.1",
        "EUPL-1.2",
        "Entessa",
        "Fair",
        "Frameworx-1.0",
        "GPL-2.0",
        "GPL-2.0-only",
        "GPL-2.0-or-later",
        "GPL-3.0",
        "GPL-3.0-only",
        "GPL-3.0-or-later",
        "HPND",
        "IPA",
        "IPL-1.0",
        "ISC",
        "Intel",
        "LGPL-2.0",
        "LGPL-2.0-only",
        "LGPL-2.0-or-later",
        "LGPL-2.1",
        "LGPL-2.1-only",
        "LGPL-2.1-or-later",
        "LGPL-3.0",
        "LGPL-3.0-only",
        "LGPL-3.0-or-later",
        "LPL-1.0",
        "LPL-1.02",
        "LPPL-1.3c",
        "LiLiQ-P-1.1",
        "LiLiQ-R-1.1",
        "LiLiQ-Rplus-1.1",
        "MIT",
        "MIT-0",
        "MPL-1.0",
        "MPL-1.1",
        "MPL-2.0",
        "MPL-2.0-no-copyleft-exception",
        "MS-PL",
        "MS-RL",
        "MirOS",
        "Motosoto",
        "MulanPSL-2.0",
        "Multics",
        "NASA-1.3",
        "NCSA",
        "NGPL",
        "NPOSL-3.0",
        "NTP",
        "Naumen",
        "Nokia",
        "OCLC-2.0",
        "OFL-1.1",
        "OGTSL",
        "OSET-PL-2.1",
        "OSL-1.0",
        "OSL-2.0",
        "OSL-2.1",
        "OSL-3.0",
        "PHP-3.0",
        "PHP-3.01",
        "PostgreSQL",
        "Python-2.0",
        "QPL-1.0",
        "RPL-1.1",
        "RPL-1.5",
        "RPSL-1.0",
        "RSCPL",
        "SISSL",
        "SPL-1.0",
        "SimPL-2.0",
        "Sleepycat",
        "UPL-1.0",
        "Unlicense",
        "VSL-1.0",
        "W3C",
        "Watcom-1.0",
        "Xnet",
        "ZPL-2.0",
        "ZPL-2.1",
        "Zlib",
        "Other",
    ]
) | {"Flywheel MSA"}


@cache
def manifest_schema() -> Mapping[str, Any]:
    """The manifest JSON Schema (draft 7) shipped with the package."""
    text = resources.files("gearspec").joinpath("manifest.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> Draft7Validator:
    return Draft7Validator(manifest_schema())


def schema_issues(doc: object) -> list[Issue]:
    """Every manifest schema violation of ``doc``, one issue per offending key, by path."""
    return collect_issues(_validator(), doc)


def collect_issues(validator: Draft7Validator, doc: object) -> list[Issue]:
    """Every violation ``validator`` finds in ``doc`` as issues, sorted by path."""
    issues: list[Issue] = []
    for error in validator.iter_errors(doc):
        issues.extend(_to_issues(error))
    return sorted(set(issues))


def _to_issues(error: ValidationError) -> list[Issue]:
    path = json_path(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = [k for k in error.validator_value if k not in instance]
        return [Issue(child(path, k), "required key is missing") for k in missing]
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = [k for k in instance if k not in known]
        return [Issue(child(path, k), "unknown key, not allowed here") for k in extra]
    if "propertyNames" in error.schema_path and isinstance(instance, str):
        return [Issue(child(path, instance), "unknown key, not allowed for this input base")]
    if error.validator in ("oneOf", "anyOf"):
        description = error.schema.get("description") if isinstance(error.schema, dict) else None
        reason = description or "does not match any allowed form"
        return [Issue(path, f"{instance!r}: {reason}")]
    return [Issue(path, error.message)]
