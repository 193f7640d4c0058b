"""compile=<mode>: the networks are compiled in place, so a compiled run's checkpoint has the
eager run's keys; a network that cannot be compiled trains eagerly after one line; a bad mode is
refused before training."""

import pytest
import torch
from torch import nn

from conftest import compose_config, run_cli
from genexp.compilation import compile_networks
from genexp.train import run


def test_a_bad_mode_is_refused_naming_the_key_and_the_modes(tmp_path):
    result = run_cli(["compile=fast", f"hydra.run.dir={tmp_path / 'run'}", "print_config=false"], timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("genexp: error: compile='fast' is not allowed"), result.stderr[-2000:]
    assert "default, reduce-overhead, max-autotune" in result.stderr
    assert not (tmp_path / "run").exists()


def tiny_run(tmp_path, name: str, *overrides: str) -> dict:
    cfg = compose_config(["model=autoencoder", "model.encoder.hidden_dims=[8]", "model.decoder.hidden_dims=[8]",
                          "model.latent_dim=2", "trainer.accelerator=cpu", "trainer.max_epochs=1",
                          "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                          "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "test=false",
                          "logger=none", *overrides], tmp_path / name)
    run(cfg)
    checkpoint = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
    return checkpoint["state_dict"]


@pytest.mark.slow
def test_a_compiled_run_writes_the_checkpoint_keys_of_an_eager_run(tmp_path, capsys):
    eager = tiny_run(tmp_path, "eager")
    compiled = tiny_run(tmp_path, "compiled", "compile=default")
    assert "failed" not in capsys.readouterr().out  # it did compile (a C++ compiler is there)
    assert list(compiled) == list(eager) and not any("_orig_mod" in key for key in compiled)
    assert all(compiled[k].shape == eager[k].shape for k in eager)


class TwoNets(nn.Module):
    def __init__(self):
        super().__init__()
        # A pointwise op after each layer: code the C++ compiler must build (a lone matmul is not).
        self.first, self.second = nn.Sequential(nn.Linear(3, 4), nn.Tanh()), nn.Sequential(nn.Linear(4, 2), nn.Tanh())
        self.register_module("schedule", nn.Module())  # no parameters: left alone

    def forward(self, x):
        return self.second(self.first(x))


def test_networks_with_parameters_are_compiled_in_place():
    model = TwoNets()
    keys = list(model.state_dict())
    assert compile_networks(model, None) == [] and model.first._compiled_call_impl is None
    assert compile_networks(model, "default") == ["first", "second"]
    assert model.first._compiled_call_impl is not None and model.schedule._compiled_call_impl is None
    assert list(model.state_dict()) == keys


@pytest.mark.slow
def test_a_network_that_fails_to_compile_trains_eagerly_after_one_line(monkeypatch, capsys):
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/nonexistent/c++",))  # the C++ compiler is missing
    monkeypatch.setattr(torch._inductor.config, "force_disable_caches", True)  # no kernel built before
    torch._dynamo.reset()
    torch.manual_seed(0)
    model, x = TwoNets(), torch.randn(5, 3)
    expected = model(x)
    compile_networks(model, "default")
    assert torch.equal(model(x), expected)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["genexp: compile=default failed for model.first",
                                                       "genexp: compile=default failed for model.second"], lines
    assert all(line.endswith("; it runs eagerly") for line in lines)
    assert model.first._compiled_call_impl is None  # eager for good: no second attempt, no more lines
    model(x).sum().backward()
    assert capsys.readouterr().out == "" and model.first[0].weight.grad is not None
