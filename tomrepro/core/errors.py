"""Errors a user can cause, and fix; the CLI prints them as one line and exits 2."""


class TomreproError(Exception):
    """Base of every error meant for the user rather than for a traceback."""


class ConfigError(TomreproError):
    """A profile or option value is missing, mistyped or nonsensical."""


class UnknownTaskError(TomreproError):
    """A task id that the registry does not know."""


class BufferFormatError(TomreproError):
    """A replay-buffer file that is missing, unreadable or violates the schema."""
