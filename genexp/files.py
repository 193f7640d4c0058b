"""Files written atomically: the content goes to a temporary file beside the target, reaches the
disk, and is renamed over the target (os.replace is atomic within one file system). A kill or a
full disk during a write leaves the previous file or none, never half of one, and processes
started together never read a half-written file.

No torch import here: metrics.json is written on the command line's path.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write(file)` into a temporary file, then rename it to `path` (parents made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda file: file.write(text.encode()))
