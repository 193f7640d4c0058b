"""Sweeps end to end: a two-job multirun, failed jobs that do not stop a sweep, the compare
table (whole key names in an 80-column terminal), and the real TensorBoard server reading the
sweep back over HTTP."""

import io
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import run_cli
from genexp import compare

TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false", "print_config=false",
        "model.iwae_samples=0", "model.encoder.hidden_dims=[32]"]


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("sweep") / "lr"
    result = run_cli(["-m", "optimizer.lr=1e-3,2e-3", *TINY, f"hydra.sweep.dir={sweep_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def test_two_job_sweep_writes_two_run_dirs_named_by_overrides(sweep):
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    assert jobs[0].name.startswith("0_") and "optimizer.lr=0.001" in jobs[0].name
    assert jobs[1].name.startswith("1_") and "optimizer.lr=0.002" in jobs[1].name
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["status"] == "completed"


def test_each_job_has_an_hparams_entry(sweep):
    learning_rates = []
    for job in job_dirs(sweep):
        events = EventAccumulator(str(job / "tensorboard" / "hparams")).Reload()  # the job's HParams row
        content = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        learning_rates.append(hparams["optimizer.lr"].number_value)
        assert {"val/loss", "test/loss"} == set(events.Tags()["scalars"])  # the metrics beside it
    assert learning_rates == [1e-3, 2e-3]


def test_failed_jobs_are_recorded_and_the_sweep_goes_on(tmp_path):
    # accumulate_grad_batches=0 makes Lightning raise (a plain exception), lr=1e12 makes the loss
    # NaN; only the last job of the four is sound, and it still runs to the end.
    result = run_cli(["-m", "optimizer=sgd", "optimizer.lr=1e12,1e-3", "trainer.accumulate_grad_batches=0,1",
                      *TINY, f"hydra.sweep.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads((job / "metrics.json").read_text()) for job in job_dirs(tmp_path)]
    assert [r["status"] for r in records] == ["failed", "failed", "failed", "completed"]
    assert "Error" in records[0]["error"] and "Traceback" in records[0]["traceback"]
    assert records[1]["error"].startswith("DivergedError: train/loss is nan")
    assert math.isfinite(records[3]["metrics"]["test/loss"])
    assert result.stderr.count("genexp: job failed") == 3


def test_a_single_run_still_exits_2_on_a_user_error(tmp_path):
    result = run_cli(["optimizer=sgd", "optimizer.lr=1e12", *TINY, f"hydra.run.dir={tmp_path}"])
    assert result.returncode == 2
    assert "genexp: error: train/loss is nan" in result.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_compare_table_has_both_runs(sweep, tmp_path, capsys):
    compare.main([str(sweep), "--sort", "val/loss", "--plot", "optimizer.lr", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "#0" in printed and "#1" in printed
    markdown = (tmp_path / "compare.md").read_text().splitlines()
    assert markdown[0].startswith("| run | optimizer.lr | status | val/loss |")
    assert len(markdown) == 4  # header, rule, two runs
    rows = (tmp_path / "compare.csv").read_text().splitlines()[1:]
    val_losses = [float(row.split(",")[3]) for row in rows]
    assert len(rows) == 2 and val_losses == sorted(val_losses) and all(map(math.isfinite, val_losses))
    assert (tmp_path / "compare_val_loss_vs_optimizer.lr.png").stat().st_size > 1000


LONG_KEYS_METRICS = {"val/loss": 44.67, "test/elbo": -102.29, "test/kl": 5.4712, "test/nll_iwae": 101.25,
                     "test/nll_iwae_bits_per_dim": 0.57061, "test/recon": 96.82}


def _fake_sweep(root: Path) -> list[str]:
    """Three finished jobs over long override keys with a VAE's test metrics; returns the values."""
    values = []
    for job, (dim, lr) in enumerate([(8, "0.001"), (16, "0.003"), (32, "0.0003")]):
        job_dir = root / f"{job}_model.latent_dim={dim},optimizer.lr={lr}"
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "overrides.yaml").write_text(f"- model.latent_dim={dim}\n- optimizer.lr={lr}\n")
        metrics = {k: round(v * (1 + job / 100), 3) for k, v in LONG_KEYS_METRICS.items()}
        (job_dir / "metrics.json").write_text(json.dumps({"status": "completed", "monitor": "val/loss",
                                                          "metrics": metrics}))
        values += [str(dim), lr, *(f"{v:.5g}" for v in metrics.values())]
    return values


def _printed_headers(text: str) -> list[list[str]]:
    """The column names of each printed table, each put back together from the header lines it
    is broken over (rich's default box: the header sits between a ┏ line and a ┡ line)."""
    names, header = [], None
    for line in text.splitlines():
        if line.startswith("┏"):
            header = []
        elif line.startswith("┡"):
            names.append(["".join(parts) for parts in zip(*header)])
            header = None
        elif header is not None:
            header.append([cell.strip() for cell in line.split("┃")[1:-1]])
    return names


def test_compare_table_shows_whole_key_names_in_80_columns(tmp_path, capsys, monkeypatch):
    values = _fake_sweep(tmp_path / "sweep")
    monkeypatch.setenv("COLUMNS", "80")  # the terminal rich prints to
    compare.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert "…" not in printed  # no cut header or value
    table = printed.split("\nwrote ")[0]  # the tables, without the closing line naming the files written
    assert max(map(len, table.splitlines())) <= 80
    tables = _printed_headers(printed)
    assert len(tables) > 1 and all(names[0] == "run" for names in tables)  # too wide for one: each starts with run
    shown = [name for names in tables for name in names[1:]]
    assert shown == ["model.latent_dim", "optimizer.lr", "status", *LONG_KEYS_METRICS]  # each once, whole
    for value in values:  # and every value whole, on one line
        assert any(value in cell.split() for cell in printed.split("│")), value


def test_compare_table_keeps_one_line_headers_where_they_fit(tmp_path):
    _fake_sweep(tmp_path / "sweep")
    runs = compare.find_runs(tmp_path / "sweep")
    columns = compare.build_table(runs, ["test/*"])
    wide = Console(width=200, file=io.StringIO())
    compare.print_table(runs, columns, "wide", console=wide)
    assert _printed_headers(wide.file.getvalue()) == [columns]
    assert "\n┃ run ┃ model.latent_dim ┃ optimizer.lr ┃ status " in wide.file.getvalue()  # on one line
    narrow = Console(width=80, file=io.StringIO())
    compare.print_table(runs, columns, "narrow", console=narrow)
    assert {name for names in _printed_headers(narrow.file.getvalue()) for name in names} == set(columns)
    assert "model." in narrow.file.getvalue() and "latent_" in narrow.file.getvalue()  # broken after separators


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                              "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_tensorboard_server_serves_the_sweep(sweep):
    port = _free_port()
    program = Path(sys.executable).with_name("tensorboard")
    server = subprocess.Popen([str(program), "--logdir", str(sweep), "--host", "127.0.0.1", "--port", str(port),
                               "--reload_interval", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}/data"
    try:
        runs, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and len(runs) < 4:
            time.sleep(0.5)
            try:
                runs = _get(f"{base}/runs")
            except OSError:
                continue  # not listening yet
        # Each job: its training run, and its HParams row in a run of its own.
        assert sorted(runs) == sorted(f"{job.name}/tensorboard{sub}" for job in job_dirs(sweep)
                                      for sub in ("", "/hparams"))
        tags = _get(f"{base}/plugin/scalars/tags")
        for run in runs:
            expected = {"val/loss", "test/loss"} if run.endswith("/hparams") else {"val/loss", "test/elbo"}
            assert expected <= set(tags[run])
        experiment = _get(f"{base}/plugin/hparams/experiment", {"experimentName": ""})
        hparams = [info["name"] for info in experiment["hparamInfos"]]
        assert {"optimizer.lr", "model", "data", "seed"} <= set(hparams)
        assert hparams[0] == "optimizer.lr"  # the swept key: the only one that differs, listed first
        metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
        assert metrics == {"val/loss", "test/loss"}
    finally:
        server.kill()
        server.wait(timeout=10)


@pytest.mark.slow
def test_a_sweep_of_ddp_jobs_writes_one_directory_per_job(tmp_path):
    log_dir = tmp_path / "logs"
    result = run_cli(["-m", "optimizer.lr=1e-3,2e-3", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
                      "callbacks=none", *TINY, f"hydra.sweep.dir={log_dir / 'sweep'}"],
                     env={"GENEXP_LOG_DIR": str(log_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in log_dir.iterdir()] == ["sweep"]  # the workers made no run directories of their own
    for job in job_dirs(log_dir / "sweep"):
        record = json.loads((job / "metrics.json").read_text())
        assert record["status"] == "completed", record.get("traceback")
        assert (job / "train_ddp_process_1.log").is_file()  # rank 1 ran in its job's directory
