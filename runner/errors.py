"""Errors the runner reports to the user as one paragraph instead of a traceback."""


class ConfigError(Exception):
    """Bad user input (a path, a value, a missing file): the message says what and how to fix it."""

    def __init__(self, message: str):
        # One paragraph, even when it quotes a multi-line error from a library.
        super().__init__(" ".join(str(message).split()))


class RunFailed(Exception):
    """A run that started but cannot finish (e.g. its loss became NaN): the message says why."""


class TrainingDiverged(RunFailed):
    """The training loss became NaN/inf or exploded (divergence_factor): status.json names this."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run between two steps; its last completed epoch is backed up.

    A KeyboardInterrupt, so that Hydra's launchers do not record it as one failed job and go on:
    a signal stops the whole command, and starting it again resumes.
    """

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal_number = signal_number

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
