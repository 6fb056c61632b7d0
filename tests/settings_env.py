"""Settings as the environment variables an operator would set, for tests that start `helpdesk` processes.

env = {**os.environ, **as_environment(sandbox.settings)}
"""

from __future__ import annotations

from shared.settings import Settings


def as_environment(settings: Settings) -> dict[str, str]:
    """``NAME=value`` for every setting that has a value: secrets revealed, lists comma-joined."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, list):
            value = ",".join(value)
        env[name.upper()] = str(value)
    return env
