"""Epoch time of genexp's cached uint8 tensor path against torchvision's per-sample path.

Both read the same MNIST idx files. The tensor path (genexp.data.torchvision_mnist with a
cache) indexes one batch at a time from a uint8 tensor and converts it to floats after the
transfer; the per-sample path is the usual torchvision recipe: datasets.MNIST with
ToTensor + Normalize, a PIL image per sample, and the DataLoader's collate. Each path is
timed for a data-only epoch (iterate and convert) and for a training epoch of the same
small DCGAN. The first epoch of each is a warm-up and is not counted.

    python scripts/data_path_benchmark.py                      # synthetic idx files, 20,000 images
    python scripts/data_path_benchmark.py --root data --n-images 0   # real MNIST in data/MNIST/raw
Prints the ratios and writes JSON (default outputs/benchmarks/data_path.json).
"""

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the idx writer of the test suite

from fake_data import write_mnist_format  # noqa: E402

from genexp.data.image_tensor import batch_as_is  # noqa: E402
from genexp.data.torchvision_mnist import MNISTDataModule  # noqa: E402
from genexp.models.gan import GAN  # noqa: E402


def per_sample_loader(root: Path, batch_size: int, workers: int, device: str) -> DataLoader:
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])])
    dataset = datasets.MNIST(str(root), train=True, transform=transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=device == "cuda")


def tensor_module(root: Path, cache: Path, batch_size: int) -> MNISTDataModule:
    # The whole training file is the train split here, as in the per-sample path.
    dm = MNISTDataModule(root=str(root), image_size=28, shape=[1, 28, 28], num_classes=10, batch_size=batch_size,
                         val_fraction=0.0, value_range=[-1.0, 1.0], cache_dir=str(cache))
    dm.prepare_data()
    dm.setup()
    return dm


def data_epoch_seconds(loader: DataLoader, convert, device: str, epochs: int) -> float:
    """Fastest of `epochs` timed epochs after one warm-up: iterate, move to the device, convert to floats."""
    times = []
    for _ in range(epochs + 1):
        start = time.perf_counter()
        for batch in loader:
            x, _ = convert((batch[0].to(device, non_blocking=True), batch[1].to(device)))
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def train_epoch_seconds(fit_args: dict, device: str, epochs: int, width: int) -> float:
    """Fastest timed training epoch of the same small DCGAN (after one warm-up epoch)."""
    model = GAN(shape=[1, 28, 28], value_range=[-1.0, 1.0], latent_dim=32, optimizer={"_target_": "torch.optim.Adam"},
                generator={"_target_": "genexp.nets.dcgan.DCGANGenerator", "width": width},
                discriminator={"_target_": "genexp.nets.dcgan.DCGANDiscriminator", "width": width, "norm": "batch"})
    times = []

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.start)

    trainer = L.Trainer(accelerator=device, devices=1, max_epochs=epochs + 1, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[EpochTimer()])
    trainer.fit(model, **fit_args)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="folder holding MNIST/raw (default: synthetic files)")
    parser.add_argument("--n-images", type=int, default=20000, help="synthetic training images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the per-sample path")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement (plus one warm-up)")
    parser.add_argument("--width", type=int, default=16, help="DCGAN width of the timed model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks" / "data_path.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = args.root
        if root is None:
            root = Path(scratch) / "data"
            write_mnist_format(root, "MNIST", n_train=args.n_images, n_test=16)
        dm = tensor_module(root, Path(scratch) / "cache", args.batch_size)
        per_sample = per_sample_loader(root, args.batch_size, args.workers, args.device)
        n_images = len(per_sample.dataset)

        data = {"tensor_s": data_epoch_seconds(dm.train_dataloader(), lambda b: dm.on_after_batch_transfer(b, 0),
                                               args.device, args.epochs),
                "per_sample_s": data_epoch_seconds(per_sample, batch_as_is, args.device, args.epochs)}
        train = {"tensor_s": train_epoch_seconds({"datamodule": dm}, args.device, args.epochs, args.width),
                 "per_sample_s": train_epoch_seconds({"train_dataloaders": per_sample}, args.device, args.epochs,
                                                     args.width)}
    for times in (data, train):
        times["ratio"] = times["per_sample_s"] / times["tensor_s"]
    result = {"n_images": n_images, "batch_size": args.batch_size, "per_sample_workers": args.workers,
              "device": args.device, "model": f"DCGAN width {args.width}, 28x28x1", "data_epoch": data,
              "train_epoch": train, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{n_images} images, batch {args.batch_size}, {args.device}, {torch.get_num_threads()} thread(s)")
    print(f"data-only epoch:  tensor {data['tensor_s']:.3f} s, per-sample {data['per_sample_s']:.3f} s, "
          f"ratio {data['ratio']:.1f}x")
    print(f"training epoch:   tensor {train['tensor_s']:.3f} s, per-sample {train['per_sample_s']:.3f} s, "
          f"ratio {train['ratio']:.2f}x")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
