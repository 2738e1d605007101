"""Errors shared by the worker and the dispatcher (one base class, a shallow tree)."""


class FlotillaError(Exception):
    """Base class of every error Flotilla raises on purpose."""


class ConfigError(FlotillaError, ValueError):
    """A function configuration is invalid; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"invalid function config: {field}: {message}")


class ComponentError(FlotillaError):
    """A component was rejected: not a component, wrong world, or unsupported imports."""


class ArtifactError(FlotillaError):
    """A compiled artifact could not be trusted or loaded (bad HMAC, corrupt, wrong engine)."""


class SettingsError(FlotillaError, ValueError):
    """A process setting (environment variable or flag) is invalid."""
