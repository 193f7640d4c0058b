"""Two "nodes" on this machine for tests (importable with PYTHONPATH=tests): torchrun started
once per node with the same command line, as on a cluster, and a callback that records each
rank's final weights outside the run directory."""

import hashlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L


class StateDigest(L.Callback):
    """After fit, writes `<directory>/rank<global rank>.sha256`: a hash of the model's state dict."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"rank{trainer.global_rank}.sha256").write_text(state_digest(pl_module.state_dict()))


def state_digest(state_dict: dict) -> str:
    """A hash of every tensor's name and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def free_port() -> int:
    """A port no one listens on now (the OS picks it), so tests can run side by side."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_node(node_rank: int, port: int, args: list[str], cwd: Path, env: dict, *extra: str) -> subprocess.Popen:
    """`torchrun ... -m genexp <args>` as node `node_rank` of two, one process each, in a session of
    its own (the node's processes: torchrun starts its worker in yet another session)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node_rank),
               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port), *extra,
               "-m", "genexp", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return [d for child in children for d in (child, *_descendants(child))]


def kill_node(process: subprocess.Popen) -> None:
    """SIGKILL every process group of a node at once, as if the machine went away."""
    groups = set()
    for pid in (process.pid, *_descendants(process.pid)):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
