"""FID/KID/precision/recall on the offline classifier features of the bundled digits."""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF
from genexp.data.digits import DigitsDataModule
from genexp.errors import ConfigError
from genexp.metrics.features import InceptionFeatures, extract, real_images
from genexp.metrics.sample_quality import evaluate_samples, inception_score, precision_recall, real_features


@pytest.fixture(scope="module")
def digits():
    return DigitsDataModule(shape=[1, 16, 16], image_size=16, num_classes=10, batch_size=64)


@pytest.fixture(scope="module")
def extractor(digits, tmp_path_factory):
    cfg = OmegaConf.load(CONF / "feature_extractor" / "classifier.yaml")
    cfg.cache_dir = str(tmp_path_factory.mktemp("cache"))
    return instantiate(cfg, datamodule=digits)


def test_classifier_is_trained_once_and_records_its_accuracy(extractor, digits):
    assert extractor.record["test_accuracy"] > 0.8
    again = type(extractor)(digits, cache_dir=str(extractor.weights_path.parents[1]))
    assert again.weights_hash == extractor.weights_hash and again.record == extractor.record


def test_fid_of_the_data_against_itself_is_zero_and_against_noise_large(extractor, digits, tmp_path):
    test_images = torch.cat(list(real_images(digits, "test")))
    itself = evaluate_samples(test_images, digits, extractor, cache_dir=str(tmp_path))
    noise = evaluate_samples(torch.rand_like(test_images), digits, extractor, cache_dir=str(tmp_path))
    assert abs(itself["scores"]["fid"]) < 1e-3
    # KID is unbiased (Binkowski et al. 2018): around 0 for equal sets, up to its subset noise.
    assert abs(itself["scores"]["kid_mean"]) < 0.1 * noise["scores"]["kid_mean"]
    assert itself["scores"]["precision"] == itself["scores"]["recall"] == 1.0
    assert noise["scores"]["fid"] > 1.0 and noise["scores"]["fid"] > 1000 * abs(itself["scores"]["fid"])
    assert noise["scores"]["precision"] < 0.1
    provenance = itself["provenance"]
    assert provenance["extractor"] == "classifier" and provenance["weights_sha256"] == extractor.weights_hash
    assert provenance["reference"].endswith("/test") and provenance["n_real"] == provenance["n_fake"] == 180


def test_real_features_are_cached(extractor, digits, tmp_path, monkeypatch):
    first = real_features(digits, "test", extractor, cache_dir=str(tmp_path))
    assert len(list((tmp_path / "real_features").glob("*.pt"))) == 1
    monkeypatch.setattr(type(extractor), "forward", lambda *a: pytest.fail("recomputed instead of cached"))
    assert torch.equal(real_features(digits, "test", extractor, cache_dir=str(tmp_path)), first)


def test_precision_recall_of_disjoint_sets_is_zero():
    real = torch.randn(200, 8)
    assert precision_recall(real, real + 100.0) == (0.0, 0.0)  # no point inside the other manifold
    assert precision_recall(real, real) == (1.0, 1.0)


def test_inception_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="feature_extractor_weights_path"):
        InceptionFeatures()
    with pytest.raises(ConfigError, match="wget"):
        InceptionFeatures(str(tmp_path / "missing.pth"))


def test_extract_rejects_non_finite_features():
    with pytest.raises(ValueError, match="NaN"):
        extract(lambda x: x.flatten(1) * float("nan"), torch.rand(4, 1, 8, 8))


def test_inception_score_of_real_images_is_high_and_of_constant_images_one(extractor, digits, tmp_path):
    test_images = torch.cat(list(real_images(digits, "test")))
    # One split of all 180 images: a confident classifier on balanced classes scores close to 10
    # (the ceiling), an unsure one close to 1; the small classifier trained here gives about 8.8.
    assert inception_score(extract(extractor.logits, test_images), splits=1)[0] > 7.5
    real = evaluate_samples(test_images, digits, extractor, cache_dir=str(tmp_path))
    constant = evaluate_samples(torch.full_like(test_images, 0.5), digits, extractor, cache_dir=str(tmp_path))
    # The customary 10 splits of 18 images each: fewer images per split, a lower ceiling.
    assert real["scores"]["is_mean"] > 5.0 and real["provenance"]["is_splits"] == 10
    assert constant["scores"]["is_mean"] == pytest.approx(1.0, abs=1e-6)
