"""Errors that genexp reports to the user as one clear line instead of a traceback."""


class GenexpError(Exception):
    """Base class: the CLI prints the message and exits with status 2."""

    def __init__(self, message: str = "") -> None:
        # torch re-raises an error from a DataLoader worker as the same class, with the worker's
        # traceback as its message: keep the original one-line message (its last line).
        if "in DataLoader worker process" in message and "Original Traceback" in message:
            message = message.rstrip().splitlines()[-1].partition(": ")[2]
        super().__init__(message)


class ConfigError(GenexpError):
    """A configuration value is missing, of the wrong type or out of range."""


class DataError(GenexpError):
    """A data set is missing or unreadable; the message names the path."""


class RunDirError(GenexpError):
    """The output directory cannot be used for this run."""


class DivergedError(GenexpError):
    """Training produced a loss that is NaN or infinite."""


class CheckpointError(GenexpError):
    """A checkpoint file is unreadable or holds the weights of another model."""


class RunInterrupted(GenexpError):
    """SIGINT or SIGTERM stopped the run after it saved its last checkpoint."""

    def __init__(self, signal_name: str, message: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name


def find_user_error(error: BaseException | None) -> GenexpError | None:
    """The GenexpError behind an exception, also when Hydra's instantiate wrapped it."""
    while error is not None and not isinstance(error, GenexpError):
        error = error.__cause__ or error.__context__
    return error

