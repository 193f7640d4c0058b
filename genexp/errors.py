"""Errors that genexp reports to the user as one clear line instead of a traceback."""

import sys


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


class PeerStopped(GenexpError):
    """Another process of a distributed run stopped (its node died, or it failed) or did not
    answer within the process-group timeout; the CLI says how to resume and exits with status 1."""


# What torch's collective backends say when a peer is gone or silent: gloo names itself in the
# source path of its errors ("Connection closed by peer", "Timed out waiting ..."), NCCL too.
_BACKEND_MARKERS = ("gloo", "NCCL", "c10d")


def find_peer_stopped(error: BaseException | None) -> PeerStopped | None:
    """A PeerStopped for an exception raised by a failed collective step (a torch DistError, or a
    RuntimeError from a backend), with the backend's first sentence as the cause."""
    dist = sys.modules.get("torch.distributed")  # never imported here: only torch can have raised it
    while error is not None:
        if (dist is not None and isinstance(error, getattr(dist, "DistError", ()))) or (
                isinstance(error, RuntimeError) and any(m in str(error) for m in _BACKEND_MARKERS)):
            text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if text.startswith("["):  # "[.../gloo/transport/tcp/pair.cc:561] Connection closed by peer ..."
                text = text.partition("] ")[2] or text
            return PeerStopped(text.split(". ")[0].rstrip("."))
        error = error.__cause__ or error.__context__
    return None


def find_user_error(error: BaseException | None) -> GenexpError | None:
    """The GenexpError behind an exception, also when Hydra's instantiate wrapped it."""
    while error is not None and not isinstance(error, GenexpError):
        error = error.__cause__ or error.__context__
    return error

