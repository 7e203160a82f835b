"""Export the region spec's JSON Schema, for editors (yaml-language-server) and reviewers."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.region import Region

SCHEMA_FILE = Path(__file__).resolve().parent / "region.schema.json"


def schema_text() -> str:
    """The JSON Schema of the spec as stable text."""
    schema = Region.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "ekc/v1/region.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
