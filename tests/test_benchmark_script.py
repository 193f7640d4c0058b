"""scripts/benchmark.py compares like with like: its hand-written steps do exactly what genexp's
training steps do, and its overhead entries measure genexp's own Trainer."""

import copy
import sys

import lightning as L
import pytest
import torch

from conftest import REPO, compose_config
from fake_data import write_mnist_format
from genexp.train import instantiate_data_and_model, make_trainer

sys.path.insert(0, str(REPO / "scripts"))
import benchmark  # noqa: E402


class SameNoise(L.Callback):
    """Keeps the first training batch and seeds torch just before its step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch = [t.clone() for t in batch]
        torch.manual_seed(123)


@pytest.mark.parametrize("model_name", ["vae", "dcgan", "ddpm"])
def test_a_plain_step_updates_the_weights_as_a_genexp_step(model_name, tmp_path):
    write_mnist_format(tmp_path / "data", "MNIST", n_train=40, n_test=8)
    overrides = [f"model={model_name}", "data=mnist", f"data.root={tmp_path / 'data'}", "data.image_size=16",
                 "data.cache_dir=null", "data.batch_size=8", "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                 "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
                 "logger=none", "callbacks=none"]
    if model_name == "dcgan":
        overrides += ["model.generator.width=8", "model.discriminator.width=8"]
    if model_name == "ddpm":
        overrides += ["model.denoiser.widths=[8,16]", "model.denoiser.groups=4", "model.denoiser.attention_resolutions=[]"]
    cfg = compose_config(overrides, tmp_path / "run")
    datamodule, model = instantiate_data_and_model(cfg)
    plain, initial = copy.deepcopy(model), copy.deepcopy(model.state_dict())
    step = benchmark.STEPS[model_name](plain, plain.configure_optimizers())
    same_noise = SameNoise()
    make_trainer(cfg, same_noise).fit(model, datamodule=datamodule)

    torch.manual_seed(123)
    step(*same_noise.batch)
    trained, by_hand = model.state_dict(), plain.state_dict()
    assert trained.keys() == by_hand.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in trained)  # the step did train
    for key in trained:
        torch.testing.assert_close(trained[key], by_hand[key], rtol=1e-5, atol=1e-6, msg=key)


def test_overhead_entries_time_genexps_trainer_with_its_callbacks(tmp_path):
    write_mnist_format(tmp_path / "data", "MNIST", n_train=60, n_test=8)
    settings = {"batch_size": 8, "batches": 3, "repeats": 2, "gan_width": 8}
    result = benchmark.overhead("vae", 16, tmp_path / "data", tmp_path, settings)
    assert result["ratio"] == pytest.approx(result["genexp"] / result["baseline"])
    assert result["genexp"] > 0 and result["baseline"] > 0 and result["repeats"] == 2
    per_step = 1000 * 8 * (1 / result["genexp"] - 1 / result["baseline"])
    assert result["overhead_ms_per_step"] == pytest.approx(per_step)
    assert {"FiniteLoss", "SampleGrid", "StopOnSignal"} <= set(result["callbacks"])
    assert result["loggers"] == ["TensorBoardLogger"]
    bare = result["targets"]["genexp/bare"]  # the same module under a bare Lightning Trainer
    assert result["bare"] > 0 and bare["ratio"] == pytest.approx(result["genexp"] / result["bare"])
    assert bare["met"] == (bare["ratio"] >= 0.98)
    assert result["targets"]["genexp/plain"]["met"] in ((None,) if result["step_ms"] < 20 else (True, False))
    machine = {"cpu": benchmark.cpu_name(), "cores": 2, "torch_threads": 1, "gpu": None, "torch": "2", "lightning": "2"}
    table = benchmark.markdown({"mode": "quick", "date": "2026-01-01", "seconds": 1.0, "machine": machine,
                                "entries": {"overhead_vae_16": result}}).splitlines()
    assert table[0].startswith("quick mode, 2026-01-01, ") and "no GPU" in table[0]
    assert table[4].startswith(f"| overhead_vae_16 | {result['genexp']:.4g} | {result['baseline']:.4g} |")
    assert table[8].startswith(f"| overhead_vae_16 | {result['baseline']:.4g} | {result['bare']:.4g} | "
                               f"{result['genexp']:.4g} | {bare['ratio']:.3f} (")


def test_ddim_sampling_entry_compares_the_same_network_over_fewer_steps():
    result = benchmark.sampling_speed(5, {"sample_n": 2})
    assert result["ratio"] == pytest.approx(result["genexp"] / result["baseline"])
    assert result["ideal_ratio"] == 200 and result["baseline_sampler"] == "ddpm, 1000 steps"
    assert result["ratio"] > 20  # 5 network calls against 1000
