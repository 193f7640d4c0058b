"""Image data modules on small files in their real formats: CIFAR-10 pickled batches, CelebA
(torchvision layout, Kaggle csv layout, plain folder), nested image folders; the uint8 cache,
batch indexing, workers, corrupt files and the errors that name paths and keys."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fake_data import CELEBA_ATTRIBUTES, write_celeba, write_cifar10, write_images
from genexp.data.celeba import CelebADataModule
from genexp.data.cifar10 import CIFAR10DataModule
from genexp.data.digits import DigitsDataModule
from genexp.data.image_folder import ImageFolderDataModule
from genexp.data.image_tensor import UNLABELLED, IndexedTensors
from genexp.errors import ConfigError, DataError


def cifar(root, **kwargs):
    return CIFAR10DataModule(root=str(root), image_size=32, shape=[3, 32, 32], num_classes=10, batch_size=8, **kwargs)


def folder(root, channels=3, size=16, **kwargs):
    return ImageFolderDataModule(root=str(root), image_size=size, channels=channels, shape=[channels, size, size],
                                 batch_size=4, **kwargs)


def celeba(root, size=16, **kwargs):
    return CelebADataModule(root=str(root), image_size=size, shape=[3, size, size], batch_size=4, **kwargs)


def test_cifar10_batches_load_pixel_for_pixel_and_are_cached(tmp_path):
    write_cifar10(tmp_path, per_batch=8)
    with (tmp_path / "cifar-10-batches-py" / "test_batch").open("rb") as file:
        test_batch = pickle.load(file, encoding="latin1")
    dm = cifar(tmp_path, cache_dir=str(tmp_path / "cache"), val_fraction=0.1)
    dm.prepare_data()
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [36, 4, 8]
    images, labels = dm.splits["test"].tensors
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32)
    assert np.array_equal(images.flatten(1).numpy(), test_batch["data"])  # channel-major rows
    assert labels.tolist() == test_batch["labels"]
    assert len(list((tmp_path / "cache").glob("cifar10datamodule-*.pt"))) == 2  # train and test parts

    # A second run reads the cache, not the batches.
    for batch in (tmp_path / "cifar-10-batches-py").iterdir():
        batch.write_bytes(batch.read_bytes())  # same bytes, new modification time: a new fingerprint
    (tmp_path / "cache").rename(tmp_path / "cache2")
    again = cifar(tmp_path, cache_dir=str(tmp_path / "cache2"))
    again.setup()
    assert len(list((tmp_path / "cache2").glob("*.pt"))) == 4  # the changed source was decoded anew
    assert torch.equal(again.splits["test"].tensors[0], images)


def test_cifar10_missing_and_corrupt_batches_name_the_file(tmp_path):
    with pytest.raises(DataError, match="data_batch_1.*data.download=true"):
        cifar(tmp_path).setup()
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3 is unreadable"):
        cifar(tmp_path).setup()


def test_batches_are_indexed_once_and_served_from_the_cache(tmp_path):
    dm = DigitsDataModule(shape=[1, 8, 8], image_size=8, num_classes=10, batch_size=32,
                          value_range=[-1.0, 1.0], cache_dir=str(tmp_path))
    dm.setup()
    assert isinstance(dm.splits["train"], IndexedTensors)
    calls = []
    fetch = dm.splits["train"].__getitems__
    dm.splits["train"].__getitems__ = lambda indices: calls.append(len(indices)) or fetch(indices)
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert calls == [32] and x.shape == (32, 1, 8, 8) and y.shape == (32,)
    assert x.dtype == torch.float32 and x.min() >= -1.0 and x.max() <= 1.0 and x.min() == -1.0
    cached = DigitsDataModule(shape=[1, 8, 8], image_size=8, num_classes=10, cache_dir=str(tmp_path))
    cached.setup()
    assert torch.equal(cached.splits["val"].tensors[0], dm.splits["val"].tensors[0])
    assert len(list(tmp_path.glob("digitsdatamodule-*-1x8-*.pt"))) == 2


def test_preloading_to_the_device_cannot_use_workers():
    with pytest.raises(ConfigError, match="data.num_workers=0"):
        DigitsDataModule(shape=[1, 8, 8], image_size=8, preload_to_device=True, num_workers=2)


def test_celeba_torchvision_layout_partition_attribute_crop_and_resize(tmp_path):
    blond = write_celeba(tmp_path, n=12)
    dm = celeba(tmp_path, label_attribute="Blond_Hair", num_classes=2, crop_size=18)
    dm.setup()
    # Partitions cycle 0, 0, 1, 2 over the 12 files.
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    assert [p.name for p in dm.splits["val"].files] == ["000003.jpg", "000007.jpg", "000011.jpg"]
    assert dm.splits["val"].labels == [blond[2], blond[6], blond[10]]
    x, y = dm.example_batch("val", 3)
    assert x.shape == (3, 3, 16, 16) and y.tolist() == [blond[2], blond[6], blond[10]]
    # Centre crop 18 of the 20 x 24 image, then resize, as torchvision would do it.
    from torchvision.transforms.v2 import functional as TF

    with Image.open(tmp_path / "celeba" / "img_align_celeba" / "000003.jpg") as image:
        expected = TF.pil_to_tensor(TF.resize(TF.center_crop(image.convert("RGB"), [18, 18]), [16, 16]))
    assert torch.equal(dm.splits["val"][0][0], expected)


def test_celeba_attribute_errors_name_the_key(tmp_path):
    write_celeba(tmp_path)
    with pytest.raises(ConfigError, match=f"data.label_attribute=Bald.*{CELEBA_ATTRIBUTES[0]}"):
        celeba(tmp_path, label_attribute="Bald", num_classes=2).setup()
    with pytest.raises(ConfigError, match="data.num_classes=2"):
        celeba(tmp_path, label_attribute="Blond_Hair")
    with pytest.raises(ConfigError, match="data.num_classes=null"):
        celeba(tmp_path, num_classes=2)


def test_celeba_kaggle_csv_layout(tmp_path):
    names = [f"{i:06d}.jpg" for i in range(1, 9)]
    write_images([tmp_path / "img_align_celeba" / "img_align_celeba" / n for n in names])
    (tmp_path / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + "".join(f"{n},{i % 3}\n" for i, n in enumerate(names)))
    (tmp_path / "list_attr_celeba.csv").write_text(
        "image_id,Blond_Hair,Smiling\n" + "".join(f"{n},{1 if i < 4 else -1},-1\n" for i, n in enumerate(names)))
    dm = celeba(tmp_path, label_attribute="Blond_Hair", num_classes=2)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [3, 3, 2]
    assert dm.splits["train"].labels == [1, 1, 0]  # files 1, 4, 7


def test_celeba_plain_folder_gets_seeded_splits_and_no_labels(tmp_path):
    write_images([tmp_path / "img_align_celeba" / f"{i:06d}.jpg" for i in range(1, 21)])
    dm = celeba(tmp_path, val_fraction=0.1, test_fraction=0.2)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [14, 2, 4]
    assert set(dm.splits["train"].labels) == {UNLABELLED}
    with pytest.raises(DataError, match="list_attr_celeba.txt"):
        celeba(tmp_path, label_attribute="Smiling", num_classes=2).setup()
    with pytest.raises(DataError, match=str(tmp_path / "empty")):
        celeba(tmp_path / "empty").setup()


def test_image_folder_recursive_with_workers(tmp_path):
    write_images([tmp_path / "a" / f"{i}.png" for i in range(6)] + [tmp_path / "b" / "c" / f"{i}.jpg" for i in range(4)]
                 + [tmp_path / ".hidden" / "x.png"])
    (tmp_path / "notes.txt").write_text("not an image")
    dm = folder(tmp_path, channels=1, num_workers=1, val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    loader = dm.train_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers
    x, y = next(iter(loader))
    assert x.dtype == torch.uint8 and x.shape == (4, 1, 16, 16) and set(y.tolist()) == {UNLABELLED}
    with pytest.raises(DataError, match=f"no images .* in {tmp_path}$"):
        folder(tmp_path, recursive=False).setup()


def test_image_folder_class_subfolders_and_in_memory_cache(tmp_path):
    write_images([tmp_path / "imgs" / cls / f"{i}.png" for cls in ("cat", "dog", "owl") for i in range(4)])
    dm = folder(tmp_path / "imgs", class_subfolders=True, num_classes=3, in_memory=True,
                cache_dir=str(tmp_path / "cache"), val_fraction=0.25, test_fraction=0.25)
    dm.prepare_data()
    dm.setup()
    assert isinstance(dm.splits["train"], IndexedTensors)
    images, labels = (torch.cat([dm.splits[s].tensors[i] for s in ("train", "val", "test")]) for i in (0, 1))
    assert images.shape == (12, 3, 16, 16) and sorted(labels.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    with pytest.raises(ConfigError, match=r"data.num_classes=2 .*cat, dog, owl.*data.num_classes=3"):
        folder(tmp_path / "imgs", class_subfolders=True, num_classes=2).setup()


def test_corrupt_images_stop_with_their_path_or_are_skipped_and_counted(tmp_path):
    write_images([tmp_path / f"{i}.jpg" for i in range(8)])
    (tmp_path / "3.jpg").write_bytes(b"\xff\xd8 truncated nonsense")
    (tmp_path / "5.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read image .*[35]\.jpg.*1 more.*data.skip_corrupt=true"):
        folder(tmp_path, val_fraction=0.25, test_fraction=0.25).setup()
    dm = folder(tmp_path, skip_corrupt=True, val_fraction=0.25, test_fraction=0.25)
    with pytest.warns(UserWarning, match="skipped 2 unreadable of 8 images"):
        dm.setup()
    assert sorted(p.name for p in dm.skipped) == ["3.jpg", "5.jpg"]
    assert sum(len(dm.splits[s]) for s in ("train", "val", "test")) == 6


def test_missing_folder_and_channel_mismatch_name_the_key(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nowhere'} does not exist .data.root."):
        folder(tmp_path / "nowhere").setup()
    with pytest.raises(ConfigError, match="data.channels=1"):
        ImageFolderDataModule(root=str(tmp_path), image_size=16, channels=1, shape=[3, 16, 16])
