"""The envelope schemas shipped in the ``schemas`` package, indexed by fingerprint.

Every version of ``clinic_event.v<N>.avsc`` is loaded once through ``importlib.resources``
and parsed once (fastavro parsing is the expensive part of a first decode). The newest
version is the writer schema and the reader schema; older versions are kept so records
written with them can still be resolved by their CRC-64-AVRO fingerprint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fastavro import parse_schema
from fastavro.schema import fingerprint, to_parsing_canonical_form

SCHEMA_FILE = re.compile(r"^clinic_event\.v(?P<version>\d+)\.avsc$")


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaVersion:
    """One envelope schema version: its JSON form, its parsed form and its fingerprint."""

    version: int
    raw: dict[str, Any]
    parsed: dict[str, Any]
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO, as in Avro single-object encoding


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaStore:
    """All known envelope versions; ``current`` is the one we write and read into."""

    versions: tuple[SchemaVersion, ...]

    @property
    def current(self) -> SchemaVersion:
        return self.versions[-1]

    def by_fingerprint(self) -> dict[bytes, SchemaVersion]:
        """Every version by its fingerprint (readers build this once, then look up)."""
        return {version.fingerprint: version for version in self.versions}


def load_version(version: int, raw: dict[str, Any]) -> SchemaVersion:
    """Parse one schema document and compute its fingerprint."""
    parsed = parse_schema(raw)
    if not isinstance(parsed, dict):
        raise TypeError(f"schema version {version} is not an Avro record schema")
    canonical = to_parsing_canonical_form(raw)
    return SchemaVersion(
        version=version,
        raw=raw,
        parsed=parsed,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
    )


@cache
def default_store() -> SchemaStore:
    """The store of every schema version shipped with the package (loaded once)."""
    found: list[SchemaVersion] = []
    for entry in resources.files("schemas").iterdir():
        match = SCHEMA_FILE.match(entry.name)
        if match is None:
            continue
        found.append(load_version(int(match["version"]), json.loads(entry.read_text("utf-8"))))
    if not found:
        raise RuntimeError("no clinic_event.v<N>.avsc schema found in the 'schemas' package")
    found.sort(key=lambda v: v.version)
    return SchemaStore(versions=tuple(found))
