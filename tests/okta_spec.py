"""Okta's published OpenAPI specs (copies in ``tests/schemas``), parsed once per run, as schema validators.

validate = okta_validator("okta-management.yaml")
validate("UserFactor", body)        # asserts `body` is valid against that component schema
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"

Validate = Callable[[str, Any], None]


@cache
def okta_spec(name: str) -> Any:
    """The parsed spec ``name`` and a registry that resolves its ``urn:<name>#/components/...`` refs."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (SCHEMAS / name).open() as fh:
        spec = yaml.load(fh, Loader=loader)  # a safe loader: the C one when available (3.4 MB)
    return spec, Registry().with_resource(f"urn:{name}", Resource.from_contents(spec, default_specification=DRAFT4))


def okta_validator(spec_file: str) -> Validate:
    from openapi_schema_validator import OAS30ReadValidator

    spec, registry = okta_spec(spec_file)

    def validate(schema: str, instance: Any) -> None:
        assert schema in spec["components"]["schemas"], schema
        ref = {"$ref": f"urn:{spec_file}#/components/schemas/{schema}"}
        errors = [e.message for e in OAS30ReadValidator(ref, registry=registry).iter_errors(instance)]
        assert not errors, f"{schema}: {errors}"

    return validate
