"""Bad image data through the command line: corrupt and truncated images, folders without
images and broken CIFAR-10 batches stop a run with exit 2 and one `genexp: error:` line that
names the file (or folder) and the key that fixes it, without a traceback, and leave the data
folder and an earlier run's files as they were."""

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from fake_data import write_celeba, write_cifar10, write_images

TINY = ["model=vae", "model.encoder.hidden_dims=[16]", "data.image_size=8", "data.batch_size=2",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "test=false", "logger=none", "callbacks=none", "print_config=false", "trainer.enable_progress_bar=false"]


def files_of(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def corrupt_folder(tmp_path_factory) -> Path:
    """Six valid PNGs and random bytes named bad.jpg."""
    folder = tmp_path_factory.mktemp("corrupt").resolve()
    write_images([folder / f"{i}.png" for i in range(6)])
    (folder / "bad.jpg").write_bytes(os.urandom(256))
    return folder


@pytest.fixture(scope="module")
def earlier_run(corrupt_folder, tmp_path_factory):
    """A completed run (skipping the corrupt image) and a copy of its files, which no later run may change."""
    run_dir = tmp_path_factory.mktemp("earlier")
    result = run_cli([*TINY, "data=image_folder", f"data.root={corrupt_folder}", "data.skip_corrupt=true",
                      f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, files_of(run_dir), result.stderr


def run_refused(args: list[str], data_root: Path, tmp_path: Path, earlier_run) -> str:
    """Runs the CLI in a fresh run dir, checks everything a refusal must (and must not) do, and
    returns its one error line."""
    earlier_dir, earlier_files, _ = earlier_run
    data_before, run_dir = files_of(data_root), tmp_path / "run"
    result = run_cli([*TINY, *args, f"hydra.run.dir={run_dir}"])
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("genexp: error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert files_of(earlier_dir) == earlier_files
    assert files_of(data_root) == data_before  # no cache or other file written beside the data
    assert not (run_dir / "checkpoints").exists()
    if (run_dir / "metrics.json").exists():
        record = json.loads((run_dir / "metrics.json").read_text())
        assert record["status"] == "failed" and record["metrics"] == {}
        assert record["error"].endswith(errors[0].removeprefix("genexp: error: "))
    return errors[0]


def test_skip_corrupt_trains_on_the_readable_images_and_counts_the_rest(earlier_run, corrupt_folder):
    run_dir, _, stderr = earlier_run
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 1
    assert "skipped 1 unreadable of 7 images (data.skip_corrupt=true)" in stderr
    assert str(corrupt_folder / "bad.jpg") in stderr
    assert list((run_dir / "checkpoints").glob("*.ckpt"))


def test_a_corrupt_image_names_the_file_and_data_skip_corrupt(corrupt_folder, earlier_run, tmp_path):
    error = run_refused(["data=image_folder", f"data.root={corrupt_folder}"], corrupt_folder, tmp_path, earlier_run)
    assert f"cannot read image {corrupt_folder / 'bad.jpg'}" in error
    assert "data.skip_corrupt=true" in error


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_a_truncated_image_names_the_file_and_data_skip_corrupt(suffix, earlier_run, tmp_path):
    """A file cut in half has a valid header, so it passes the check at setup and fails when
    decoded: in a DataLoader worker (data.num_workers=2 by default). Every image is truncated so
    that the first batch, before any checkpoint, meets one."""
    folder = (tmp_path / "images").resolve()
    images = [folder / f"{i}.{suffix}" for i in range(10)]
    write_images(images, size=(64, 64))
    for image in images:
        image.write_bytes(image.read_bytes()[:image.stat().st_size // 2])
    error = run_refused(["data=image_folder", f"data.root={folder}"], folder, tmp_path, earlier_run)
    assert "cannot decode image" in error and "truncated" in error
    assert any(str(image) in error for image in images), error
    assert "data.skip_corrupt=true" in error


@pytest.mark.parametrize("content", ["empty", "notes_only"])
def test_a_folder_without_images_names_it_and_data_root(content, earlier_run, tmp_path):
    folder = (tmp_path / "images").resolve()
    folder.mkdir()
    if content == "notes_only":
        (folder / "notes.txt").write_text("not an image")
        (folder / "labels.csv").write_text("file,label\n")
    error = run_refused(["data=image_folder", f"data.root={folder}"], folder, tmp_path, earlier_run)
    assert "no images (.jpg, .jpeg, .png" in error and f"found in {folder}" in error
    assert "data.root" in error


def test_a_corrupt_celeba_image_names_the_file_and_data_skip_corrupt(earlier_run, tmp_path):
    root = (tmp_path / "data").resolve()
    write_celeba(root)
    bad = root / "celeba" / "img_align_celeba" / "000005.jpg"
    bad.write_bytes(os.urandom(256))
    error = run_refused(["data=celeba", f"data.root={root}"], root, tmp_path, earlier_run)
    assert f"cannot read image {bad}" in error
    assert "data.skip_corrupt=true" in error


def test_a_truncated_cifar10_batch_names_the_file_and_data_download(earlier_run, tmp_path):
    root = (tmp_path / "data").resolve()
    write_cifar10(root)
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:batch.stat().st_size // 2])
    error = run_refused(["data=cifar10", f"data.root={root}"], root, tmp_path, earlier_run)
    assert f"CIFAR-10 batch {batch} is unreadable" in error
    assert "data.download=true" in error
