"""Small data sets written in their real on-disk formats, so loaders are tested offline.

FAKE_DATA maps a data config name to a writer: writer(root: Path) -> list of Hydra overrides
that point the config at the files it wrote. Data configs that need no files (digits, the 2D
toy distributions) are absent.
"""

import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format of MNIST: magic (0, 0, dtype 0x08 = ubyte, ndim), big-endian dims, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_format(root: Path, folder: str, n_train: int = 64, n_test: int = 32, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, size=(n,)))


def mnist(root: Path) -> list[str]:
    write_mnist_format(root, "MNIST")
    return [f"data.root={root}", "data.batch_size=16"]


def fashion_mnist(root: Path) -> list[str]:
    write_mnist_format(root, "FashionMNIST")
    return [f"data.root={root}", "data.batch_size=16"]


def write_images(paths: list[Path], size: tuple[int, int] = (20, 24), seed: int = 0) -> None:
    """Small random RGB images; the suffix of each path picks the format (jpg, png, ...)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)


def write_cifar10(root: Path, per_batch: int = 8, seed: int = 0) -> None:
    """cifar-10-batches-py: five training batches and a test batch, pickled dicts of a
    (N, 3072) uint8 array (channel-major rows) and a label list, plus batches.meta."""
    import pickle

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"batch_label": name, "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, size=per_batch).tolist(),
                 "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


CELEBA_ATTRIBUTES = ["5_o_Clock_Shadow", "Blond_Hair", "Smiling"]


def write_celeba(root: Path, n: int = 12, seed: int = 0) -> list[int]:
    """torchvision's layout: celeba/img_align_celeba/000001.jpg ..., list_eval_partition.txt
    (file, 0/1/2) and list_attr_celeba.txt (a count line, the attribute names, then file and
    -1/1 per attribute). Partitions cycle train, train, val, test; returns Blond_Hair as 0/1."""
    rng = np.random.default_rng(seed)
    folder = root / "celeba"
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    write_images([folder / "img_align_celeba" / name for name in names], seed=seed)
    (folder / "list_eval_partition.txt").write_text(
        "".join(f"{name} {[0, 0, 1, 2][i % 4]}\n" for i, name in enumerate(names)))
    values = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRIBUTES)))
    rows = "".join(f"{name} " + " ".join(f"{v:2d}" for v in row) + "\n" for name, row in zip(names, values))
    (folder / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + "\n" + rows)
    return [int(v == 1) for v in values[:, CELEBA_ATTRIBUTES.index("Blond_Hair")]]


def cifar10(root: Path) -> list[str]:
    write_cifar10(root)
    return [f"data.root={root}", "data.batch_size=8"]


def celeba(root: Path) -> list[str]:
    write_celeba(root)
    return [f"data.root={root}", "data.batch_size=4", "data.num_workers=0"]


def image_folder(root: Path) -> list[str]:
    write_images([root / "bricks" / "a" / f"{i}.png" for i in range(5)]
                 + [root / "bricks" / "b" / "deeper" / f"{i}.jpg" for i in range(5)])
    return [f"data.root={root / 'bricks'}", "data.batch_size=4", "data.num_workers=0"]


FAKE_DATA = {
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "celeba": celeba,
    "image_folder": image_folder,
}
