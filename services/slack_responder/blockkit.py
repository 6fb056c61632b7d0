"""slack_sdk's Block Kit validation at a fraction of its cost, with the same checks.

``JsonObject.validate_json`` finds an object's validators by listing ``dir(self)`` and reading every
attribute, properties included, each time an object is serialized: 60 % of a render (0.63 ms for
the user search, 1.9 ms for a list of factors). Validators are methods of the class (marked by
``JsonValidator``), so here the names are found once per class; every validator still runs on every
object, as before, and still raises ``SlackObjectFormationError``.

    install_validator_cache()   # once, before rendering (views.py does it on import)
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.basic_objects import JsonObject

_VALIDATORS: dict[type, tuple[str, ...]] = {}
_ORIGINAL = JsonObject.validate_json


def validator_names(cls: type) -> tuple[str, ...]:
    """The names of ``cls``'s validator methods, as ``validate_json`` would find them on an instance."""
    names = _VALIDATORS.get(cls)
    if names is None:
        names = tuple(
            name
            for name in dir(cls)
            if not name.startswith("__")
            and callable(member := getattr(cls, name, None))
            and hasattr(member, "validator")
        )
        _VALIDATORS[cls] = names
    return names


def _validate_json(self: Any) -> None:
    for name in validator_names(type(self)):
        getattr(self, name)()


def install_validator_cache() -> None:
    """Make ``JsonObject.validate_json`` look its validators up once per class (idempotent)."""
    JsonObject.validate_json = _validate_json  # type: ignore[method-assign]


def uninstall_validator_cache() -> None:
    """slack_sdk's own ``validate_json`` again (for comparisons)."""
    JsonObject.validate_json = _ORIGINAL  # type: ignore[method-assign]
