"""``gavs-prep merge``: one manifest over the part folders of a SLURM array build.

Shards stay where the array tasks wrote them; the merged manifest names them by their path
relative to the merged folder, so ``gavs-prep verify`` and training read them in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from common.atomic import write_atomic
from data_prep.build import MANIFEST
from data_prep.schema import SCHEMA_VERSION, SchemaError

IGNORED_CONFIG_KEYS = {"workers"}  # how the work was spread does not change the data


def merge(out: str | os.PathLike, parts: list[str | os.PathLike]) -> dict:
    out = Path(out).resolve()
    if not parts:
        raise SchemaError("merge needs at least one part folder")
    merged: dict = {
        "schema_version": SCHEMA_VERSION,
        "shards": [],
        "rejected": [],
        "pose_methods": {},
        "totals": {},
        "parts": [],
    }
    reference_config = None
    for part in sorted(Path(p).resolve() for p in parts):
        path = part / MANIFEST
        if not path.is_file():
            raise SchemaError(f"{part}: no {MANIFEST}")
        manifest = json.loads(path.read_text())
        if manifest.get("schema_version") != SCHEMA_VERSION:
            raise SchemaError(
                f"{path}: schema version {manifest.get('schema_version')}, expected {SCHEMA_VERSION}"
            )
        config = {k: v for k, v in manifest["config"].items() if k not in IGNORED_CONFIG_KEYS}
        if reference_config is None:
            reference_config, merged["config"], merged["split"] = (
                config,
                manifest["config"],
                manifest["split"],
            )
        elif config != reference_config:
            raise SchemaError(
                f"{path}: built with a different config than {merged['parts'][0]}; cannot merge"
            )
        prefix = os.path.relpath(part, out)
        merged["parts"].append(prefix)
        merged["shards"] += [{**s, "name": f"{prefix}/{s['name']}"} for s in manifest["shards"]]
        merged["rejected"] += manifest["rejected"]
        for method, count in manifest["pose_methods"].items():
            merged["pose_methods"][method] = merged["pose_methods"].get(method, 0) + count
        for key, value in manifest["totals"].items():
            merged["totals"][key] = merged["totals"].get(key, 0) + value
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / MANIFEST, json.dumps(merged, indent=1, sort_keys=True))
    return merged
