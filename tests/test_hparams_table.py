"""TensorBoard's HParams table over tiny runs of three families (two VAE jobs of a sweep, a GAN,
a flow), read back from the real TensorBoard server over HTTP as its dashboard reads it: every
row holds its own family's metrics, the columns shown first are what differs between the runs,
and no `hp/` scalars clutter the Scalars dashboard."""

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import CONF, compose_config
from genexp.hparams import row_hparams
from genexp.train import run

TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false", "callbacks=none", "print_config=false"]
IMAGES = ["data.image_size=8"]
RUNS = {
    "vae_2": ["model=vae", *IMAGES, "model.encoder.hidden_dims=[16]", "model.iwae_samples=2", "model.latent_dim=2"],
    "vae_3": ["model=vae", *IMAGES, "model.encoder.hidden_dims=[16]", "model.iwae_samples=2", "model.latent_dim=3"],
    "gan": ["model=dcgan", *IMAGES, "model.generator.width=8", "model.discriminator.width=8", "model.eval_examples=32"],
    "flow": ["model=realnvp", "data=moons", "model.density.n_couplings=2", "model.density.hidden_dims=[8]",
             "data.n_train=512", "data.n_val=256", "data.n_test=256"],
}
SHOWN_BY_DEFAULT = 5  # the dashboard ticks the first five hparams and the first five metrics
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


@contextmanager
def hydra_job(overrides: list[str], output_dir: Path):
    """The config of `python -m genexp <overrides>` with Hydra's job state set, as the command
    line has it inside run(cfg) (the overrides, the options chosen); unset afterwards."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.paths.output_dir = str(output_dir)
    try:
        yield cfg
    finally:
        HydraConfig.instance().cfg = None


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("families")
    for name, overrides in RUNS.items():
        with hydra_job([*TINY, *overrides], root / name) as cfg:
            run(cfg)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: dict | None = None) -> dict | list:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                              "X-XSRF-Protected": "1"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _fetch_table(base: str) -> dict:
    """The HParams dashboard's two requests (with its request bodies), and every run's scalar tags."""
    experiment = _request(f"{base}/plugin/hparams/experiment", {"experimentName": "", "hparamsLimit": 1000})
    columns = [{"hparam": h["name"], "includeInResult": True} for h in experiment.get("hparamInfos", [])]
    columns += [{"metric": m["name"], "includeInResult": True} for m in experiment.get("metricInfos", [])]
    groups = _request(f"{base}/plugin/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": STATUSES, "colParams": columns, "startIndex": 0, "sliceSize": 100})
    return {"experiment": experiment, "groups": groups["sessionGroups"], "tags": _request(f"{base}/plugin/scalars/tags")}


@pytest.fixture(scope="module")
def table(logdir) -> dict:
    """The table as the real TensorBoard server serves it, once it has loaded every row (45 s at most)."""
    port = _free_port()
    program = Path(sys.executable).with_name("tensorboard")
    server = subprocess.Popen([str(program), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port),
                               "--reload_interval", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline, table = time.monotonic() + 45, {}
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                table = _fetch_table(f"http://127.0.0.1:{port}/data")
            except OSError:
                continue  # not listening yet
            groups = table["groups"]
            if len(groups) == len(RUNS) and all(len(g.get("metricValues", [])) >= 2 for g in groups):
                break
        return table
    finally:
        server.kill()
        server.wait(timeout=10)


def rows(table: dict) -> dict[str, dict]:
    """Session groups by run name (vae_2, gan, ...)."""
    return {g["sessions"][0]["name"].split("/")[0]: g for g in table["groups"]}


def test_every_row_holds_its_familys_metrics(table, logdir):
    by_run = rows(table)
    assert sorted(by_run) == sorted(RUNS)
    for name, group in by_run.items():
        record = json.loads((logdir / name / "metrics.json").read_text())
        monitor = record["monitor"]
        judged = {monitor, monitor.replace("val/", "test/")}  # the checkpoint's metric, on val and on test
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert set(values) == judged, name
        for tag, value in values.items():
            assert math.isfinite(value) and value == pytest.approx(record["metrics"][tag], rel=1e-6), (name, tag)


def test_metric_columns_are_final_metrics_and_the_first_five_fill_every_row(table):
    metrics = [m["name"]["tag"] for m in table["experiment"]["metricInfos"]]
    assert metrics and all(tag.startswith(("val/", "test/")) for tag in metrics), metrics  # no lr, epoch, train/
    shown = set(metrics[:SHOWN_BY_DEFAULT])
    for name, group in rows(table).items():
        assert shown & {m["name"]["tag"] for m in group["metricValues"]}, name


def test_the_columns_shown_first_are_what_differs_model_data_and_the_swept_key(table):
    infos = table["experiment"]["hparamInfos"]
    names = [info["name"] for info in infos]
    differing = [info["name"] for info in infos if info.get("differs")]
    assert names[:len(differing)] == differing
    assert {"model", "data", "model.latent_dim"} <= set(differing) & set(names[:SHOWN_BY_DEFAULT])
    for name, group in rows(table).items():
        hparams = group["hparams"]
        assert hparams["model"] == RUNS[name][0].split("=")[1]
        assert hparams["data"] == ("moons" if name == "flow" else "digits")
        for override in [*TINY, *RUNS[name]]:  # every override, typed where the config holds a number
            assert override.split("=")[0].lstrip("+") in hparams, (name, override)
        assert hparams["seed"] == 0 and hparams["trainer.max_epochs"] == 1
    assert [rows(table)[name]["hparams"]["model.latent_dim"] for name in ("vae_2", "vae_3")] == [2, 3]
    assert len(names) < 40  # a handful beside the overrides, not the whole config


def test_no_hp_scalars_and_no_experiment_summary(table, logdir):
    tags = table["tags"]
    assert not [tag for run_tags in tags.values() for tag in run_tags if tag.startswith("hp/")]
    assert sorted(tags) == sorted(f"{name}/tensorboard{sub}" for name in RUNS for sub in ("", "/hparams"))
    for name in RUNS:  # the row's own run holds its metrics and nothing else
        assert set(tags[f"{name}/tensorboard/hparams"]) == {m["name"]["tag"] for m in rows(table)[name]["metricValues"]}
        for directory in (logdir / name / "tensorboard", logdir / name / "tensorboard" / "hparams"):
            events = EventAccumulator(str(directory)).Reload()
            assert "_hparams_/experiment" not in events.summary_metadata, directory  # it would fix the columns


def test_without_hydra_the_row_still_names_model_and_data(tmp_path):
    # Tests call run(cfg) without Hydra: no overrides then, model and data from their targets.
    vae = row_hparams(compose_config(["model=vae"], tmp_path))
    assert set(vae) == {"model", "data", "seed", "data.batch_size", "trainer.max_epochs", "optimizer.lr"}
    assert vae["model"] and vae["data"]
    gan = row_hparams(compose_config(["model=dcgan"], tmp_path))
    assert gan["optimizer.lr"] == 2e-4  # the rate both of a GAN's networks train with (optimizer=adam_dcgan)
