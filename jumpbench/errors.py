"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class JumpbenchError(Exception):
    """A user-facing error: bad input, a missing or corrupt dataset, a refused overwrite."""
