"""Several nodes: torchrun started on each node with one command line trains one run in one
directory (written by global rank 0) with the same weights everywhere and metrics over all nodes;
a dead node stops the others within distributed.timeout_s with one line that says how to resume;
SLURM through the submitit launcher asks for what the trainer config says and Lightning agrees."""

import json
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import submitit
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf

from conftest import CONF, REPO, compose_config, run_cli
from genexp import evaluate
from genexp.errors import PeerStopped, find_peer_stopped
from genexp.saved_run import SavedRun
from genexp.train import make_trainer
from multinode_helpers import free_port, kill_node, start_node, state_digest

# A flow's test NLL is deterministic given the weights. n_test is even, so the DistributedSampler
# of two ranks pads no example and their mean is the mean over the whole split.
FLOW = ["model=realnvp", "data=moons", "data.n_train=512", "data.n_val=256", "data.n_test=1000", "data.batch_size=64",
        "model.density.n_couplings=4", "model.density.hidden_dims=[16]", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false", "callbacks.density_2d.every_n_epochs=1000", "seed=3"]
TWO_NODES = ["trainer.num_nodes=2", "trainer.devices=1", "trainer.strategy=ddp", "trainer.accelerator=cpu"]


def digest_callback(directory: Path) -> list[str]:
    return ["+callbacks.digest._target_=multinode_helpers.StateDigest", f"+callbacks.digest.directory={directory}"]


def node_env(tmp_path: Path) -> dict:
    """The test helpers on the path; a run that ignored hydra.run.dir would land in default_outputs."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "GENEXP_LOG_DIR": str(tmp_path / "default_outputs"),
            "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}


def files(root: Path) -> set[str]:
    """The files below root; TensorBoard's event files are named by time, host and pid."""
    return {re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents", str(p.relative_to(root)))
            for p in root.rglob("*") if p.is_file()}


def finish(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.mark.slow
def test_two_nodes_write_one_run_with_the_same_weights_and_metrics_over_both(tmp_path):
    run_dir, cwd, reference = tmp_path / "run", tmp_path / "cwd", tmp_path / "reference"
    cwd.mkdir()
    env, port = node_env(tmp_path), free_port()
    args = [*FLOW, *TWO_NODES, *digest_callback(tmp_path / "digests"), f"hydra.run.dir={run_dir}"]
    nodes = [start_node(rank, port, args, cwd, env) for rank in (0, 1)]
    # The same config in one process: what a run directory holds.
    single = subprocess.Popen([sys.executable, "-m", "genexp", *FLOW, *digest_callback(reference / "digests"),
                               f"hydra.run.dir={reference / 'run'}"], cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (code0, out0, err0), (code1, out1, err1), (code, _, err) = (finish(p) for p in (*nodes, single))
    assert code0 == 0, err0[-3000:]
    assert code1 == 0, err1[-3000:]
    assert code == 0, err[-3000:]

    # One run directory, written by rank 0: nothing anywhere else, nothing more than one process writes.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "digests", "reference", "run"]
    assert not any(cwd.iterdir())
    assert files(run_dir) == files(reference / "run")
    assert "GLOBAL_RANK: 0" in (run_dir / "cli.log").read_text()
    assert "GLOBAL_RANK: 1" not in (run_dir / "cli.log").read_text()
    assert out0.count("genexp: realnvp on moons") == 1 and "genexp:" not in out1

    # The same final weights on both nodes, those of the last checkpoint.
    digests = {p.name: p.read_text() for p in (tmp_path / "digests").iterdir()}
    assert sorted(digests) == ["rank0.sha256", "rank1.sha256"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert digests["rank0.sha256"] == digests["rank1.sha256"] == state_digest(last)

    # Test metrics over both nodes' halves of the split: those of one process over the whole split.
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["world_size"] == 2
    single = evaluate.evaluate(SavedRun.open(run_dir), feature_extractor="none")["metrics"]
    for key in ("test/nll", "test/nll_gap"):
        assert record["metrics"][key] == pytest.approx(single[key], rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_a_dead_node_stops_the_other_with_one_line_and_the_run_resumes(tmp_path):
    run_dir, cwd = tmp_path / "run", tmp_path / "cwd"
    cwd.mkdir()
    env = node_env(tmp_path)
    # Both ranks hold for a few seconds at the start of epoch 2, its checkpoint on disk; a short
    # timeout bounds node 0's wait even if its backend never noticed the closed connection.
    args = [*FLOW, *TWO_NODES, "trainer.max_epochs=3", "distributed.timeout_s=40", f"hydra.run.dir={run_dir}",
            "+callbacks.pause._target_=fault_injection.PauseAfterFirstEpoch", "+callbacks.pause.seconds=5"]
    port = free_port()
    # Node 0's worker writes its console to files of its own, apart from torchrun's report.
    nodes = [start_node(0, port, args, cwd, env, "--redirects", "3", "--log-dir", str(tmp_path / "node0_logs")),
             start_node(1, port, args, cwd, env)]
    deadline = time.monotonic() + 180
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert all(n.poll() is None for n in nodes), [finish(n)[2][-2000:] for n in nodes]
        assert time.monotonic() < deadline, "no checkpoint within 180 s"
        time.sleep(0.05)
    kill_node(nodes[1])
    killed = time.monotonic()
    code, _, agent_err = finish(nodes[0], timeout=120)
    stopped_after = time.monotonic() - killed
    nodes[1].communicate()

    assert code != 0 and stopped_after < 60, (code, stopped_after)
    worker_err = "".join(p.read_text() for p in (tmp_path / "node0_logs").rglob("stderr.log"))
    errors = [line for line in worker_err.splitlines() if line.startswith("genexp: error:")]
    assert len(errors) == 1, worker_err[-3000:]
    assert "a peer process of this distributed run stopped or did not answer within distributed.timeout_s=40 s" \
        in errors[0]
    assert f"python -m genexp resume={run_dir}` on every node" in errors[0]
    assert "Traceback" not in worker_err
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "failed"

    port = free_port()
    resumed = [finish(node) for node in [start_node(rank, port, [f"resume={run_dir}"], cwd, env) for rank in (0, 1)]]
    assert [c for c, _, _ in resumed] == [0, 0], [e[-3000:] for _, _, e in resumed]
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 3 and record["world_size"] == 2
    assert not (tmp_path / "default_outputs").exists() and not any(cwd.iterdir())


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_process_of_a_torchrun_run_without_a_run_directory_is_refused(rank, tmp_path):
    result = run_cli([*TWO_NODES], env={"RANK": rank, "WORLD_SIZE": "2", "GENEXP_LOG_DIR": str(tmp_path / "out")},
                     timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "needs the same hydra.run.dir=<directory> on every node" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_the_process_group_timeout_reaches_the_strategy(tmp_path):
    for overrides in (["trainer.strategy=ddp"], ["trainer.num_nodes=2"]):  # auto on two nodes is DDP too
        cfg = compose_config([*overrides, "trainer.accelerator=cpu", "distributed.timeout_s=42", "logger=none"],
                             tmp_path)
        trainer = make_trainer(cfg)
        assert isinstance(trainer.strategy, DDPStrategy), overrides
        assert trainer.strategy._timeout == timedelta(seconds=42)


def test_a_timeout_that_is_not_positive_is_refused(tmp_path):
    result = run_cli(["distributed.timeout_s=0", f"hydra.run.dir={tmp_path / 'run'}"], timeout=120)
    assert result.returncode == 2
    assert "distributed.timeout_s=0 is not allowed: it must be a number > 0" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_failed_collective_step_is_told_as_a_stopped_peer():
    gloo = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                        "[10.0.0.2]:4242. This is typically caused by a remote worker crashing.")
    try:
        raise ValueError("while training") from gloo
    except ValueError as wrapped:
        found = find_peer_stopped(wrapped)
    assert isinstance(found, PeerStopped) and str(found) == "Connection closed by peer [10.0.0.2]:4242"
    assert find_peer_stopped(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None


# srun's environment in task 5 of a job of 2 nodes x 4 tasks: node 1, its second task.
SRUN_TASK_5 = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "genexp", "SLURM_NNODES": "2", "SLURM_NTASKS": "8",
               "SLURM_NTASKS_PER_NODE": "4", "SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
               "SLURM_NODEID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NODELIST": "gpu[07-08]"}
SLURM_OVERRIDES = ["hydra/launcher=slurm", "trainer.num_nodes=2", "trainer.devices=4"]


def test_the_slurm_launcher_asks_for_the_trainers_nodes_and_devices(tmp_path, monkeypatch):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=SLURM_OVERRIDES, return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)  # as Hydra makes it for `-m hydra/launcher=slurm`
    assert (launcher.params["nodes"], launcher.params["tasks_per_node"], launcher.params["gpus_per_node"]) == (2, 4, 4)
    # What submitit hands sbatch for them, given as the launcher gives them (its own keys prefixed);
    # srun and sbatch stand-ins: sbatch keeps the job script it is given.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {"srun": "exit 0", "sbatch": f'cp "$1" {tmp_path}/job.sh; echo "Submitted batch job 42"'}
    for tool, script in stand_ins.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{script}\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in queue_keys else f"slurm_{k}": v for k, v in launcher.params.items()
                                  if k not in ("submitit_folder", "max_num_timeout")})
    assert executor.submit(print, "job").job_id == "42"
    sbatch = (tmp_path / "job.sh").read_text().splitlines()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4"):
        assert line in sbatch, sbatch


def test_lightning_under_srun_sees_the_ranks_slurm_gives(tmp_path, monkeypatch):
    for name, value in SRUN_TASK_5.items():
        monkeypatch.setenv(name, value)
    # Building the Trainer sets Lightning's process-wide rank (5 here): restored after the test, or
    # every later run in this process would log as a non-zero rank (to no logger at all).
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    cfg = compose_config([*SLURM_OVERRIDES, "trainer.accelerator=cpu", "logger=none"], tmp_path)
    trainer = make_trainer(cfg)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.num_nodes, trainer.world_size) == (2, 8)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (5, 1, 1)
