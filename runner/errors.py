"""Errors the runner reports to the user as one paragraph instead of a traceback."""


class ConfigError(Exception):
    """Bad user input (a path, a value, a missing file): the message says what and how to fix it."""

    def __init__(self, message: str):
        # One paragraph, even when it quotes a multi-line error from a library.
        super().__init__(" ".join(str(message).split()))
