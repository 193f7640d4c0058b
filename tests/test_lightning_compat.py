"""genexp.lightning_compat: on real fits (automatic optimization, with gradient accumulation, and
two optimizers stepped by hand; across a resume and a requested stop) each function answers the
same through Lightning's private state and through the public route; the guard takes the public
route outside the tested versions and where private state is missing; toggled_optimizer's
fallback leaves requires_grad as Lightning's own does. Part of the `floor` set: CI runs it on
Lightning's floor too, the oldest version whose private state the guard reads."""

import importlib
import tomllib
from types import SimpleNamespace

import lightning
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from packaging.requirements import Requirement
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import REPO
from genexp import lightning_compat as compat
from genexp.models.base import GenerativeModule

pytestmark = pytest.mark.floor

COUNTERS = ("logs_this_step", "batches_that_stepped", "total_batch_idx")


def both_routes(trainer) -> tuple[tuple, tuple]:
    """The counters' values through the private route and through the public one."""
    saved = compat.PRIVATE
    try:
        compat.PRIVATE = True
        private = tuple(getattr(compat, name)(trainer) for name in COUNTERS)
        compat.PRIVATE = False
        public = tuple(getattr(compat, name)(trainer) for name in COUNTERS)
    finally:
        compat.PRIVATE = saved
    return private, public


class Automatic(lightning.LightningModule):
    """One optimizer, stepped by Lightning; records both routes where genexp reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 1)
        self.records: list[tuple[str, tuple, tuple]] = []

    def record(self, where: str) -> None:
        self.records.append((where, *both_routes(self.trainer)))

    def loss(self, net: nn.Module, batch) -> torch.Tensor:
        return net(batch[0]).pow(2).mean()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.record("on_train_batch_start")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self.record("training_step")
        return self.loss(self.net, batch)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.record("on_train_batch_end")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Manual(Automatic):
    """Two optimizers stepped by hand, the second every other batch (a GAN with n_critic=2), and
    the counters read after the steps, as the GAN logs."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.other = nn.Linear(2, 1)

    def training_step(self, batch, batch_idx: int) -> None:
        self.record("training_step")
        first, second = self.optimizers()
        steps = [(first, self.net)] + ([(second, self.other)] if compat.total_batch_idx(self.trainer) % 2 else [])
        for optimizer, net in steps:
            with compat.toggled_optimizer(self, optimizer):
                optimizer.zero_grad()
                self.manual_backward(self.loss(net, batch))
                optimizer.step()
        self.record("training_step, after the steps")

    def configure_optimizers(self):
        return torch.optim.SGD(self.net.parameters(), lr=0.01), torch.optim.SGD(self.other.parameters(), lr=0.01)


class StopAt(Callback):
    """Asks the trainer to stop at a batch (counted across epochs), before the module's hooks see it."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if compat.total_batch_idx(trainer) == self.batch:
            trainer.should_stop = True


def fit(model, tmp_path, max_epochs: int, resume: bool = False, **kwargs) -> lightning.Trainer:
    """Five batches an epoch; checkpoints at the end of each epoch."""
    data = DataLoader(TensorDataset(torch.randn(10, 2)), batch_size=2)
    trainer = lightning.Trainer(accelerator="cpu", max_epochs=max_epochs, log_every_n_steps=3, logger=False,
                                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                                callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True), *kwargs.pop("callbacks", [])],
                                **kwargs)
    trainer.fit(model, data, ckpt_path=str(tmp_path / "last.ckpt") if resume else None)
    return trainer


CASES = {"automatic": (Automatic, {}), "accumulating": (Automatic, {"accumulate_grad_batches": 2}),
         "manual, two optimizers": (Manual, {})}


@pytest.mark.parametrize("case", CASES)
def test_private_and_public_routes_agree_on_real_fits(case, tmp_path):
    module_class, kwargs = CASES[case]
    if compat.private_api_usable():  # the private route really reads private state here
        trainer = lightning.Trainer(logger=False)
        assert hasattr(trainer._logger_connector, "should_update_logs")
        assert hasattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped")
    first = module_class()
    fit(first, tmp_path, max_epochs=2, **kwargs)
    # Resumed from the end of epoch 2 and stopped at the third batch of epoch 3.
    second = module_class()
    fit(second, tmp_path, max_epochs=4, resume=True, callbacks=[StopAt(12)], **kwargs)
    records = first.records + second.records

    steps = [(private, public) for where, private, public in records if where.startswith("training_step")]
    assert all(private == public for private, public in steps), [s for s in steps if s[0] != s[1]]
    assert all(private == public for where, private, public in records if where == "on_train_batch_start")
    batches = [private[2] for where, private, _ in records if where == "training_step"]
    assert batches == list(range(13))  # across epochs and the resume
    stepped = [private[1] for where, private, _ in records if where == "training_step"]
    logs = [private[0] for where, private, _ in records if where == "training_step"]
    if case == "accumulating":  # an optimizer step every 2 batches and at the end of each epoch
        assert stepped == [0, 0, 1, 1, 2, 3, 3, 4, 4, 5, 6, 6, 7]
    else:
        assert stepped == batches
    # Every 3rd batch that steps, and the batch at which a stop was requested.
    assert logs == [(s + 1) % 3 == 0 or b == 12 for b, s in zip(batches, stepped)]
    if case == "automatic":  # documented: after the optimizer has stepped the public count runs one ahead
        ends = [(private[1], public[1]) for where, private, public in records if where == "on_train_batch_end"]
        assert all(public == private + 1 for private, public in ends)


def fake_trainer(automatic: bool = True, private_state: bool = True) -> SimpleNamespace:
    """A trainer whose private state disagrees with its public state, to tell which route answered.
    Public: batch 7 (0-based) of a fit, 6 optimizer steps so far; logging every 4th step."""
    epoch_loop = SimpleNamespace(total_batch_idx=41, _batches_that_stepped=40) if private_state else SimpleNamespace()
    trainer = SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=epoch_loop, total_batch_idx=7), global_step=6,
                              log_every_n_steps=4, should_stop=False,
                              lightning_module=SimpleNamespace(automatic_optimization=automatic))
    if private_state:
        trainer._logger_connector = SimpleNamespace(should_update_logs=True)
    return trainer


def answers(trainer) -> tuple:
    return tuple(getattr(compat, name)(trainer) for name in COUNTERS)


# By automatic_optimization: the step is global_step (6), or the batch index (7) under manual optimization.
PUBLIC = {True: (False, 6, 7), False: (True, 7, 7)}


@pytest.fixture
def lightning_version(monkeypatch):
    """Sets lightning.__version__ and re-reads the guard; restores both afterwards."""
    def set_version(version: str):
        monkeypatch.setattr(lightning, "__version__", version)
        return importlib.reload(compat)
    yield set_version
    monkeypatch.undo()
    importlib.reload(compat)


@pytest.mark.parametrize("version", ["2.2.0", "2.5.2", "2.5.6", "2.7.0", "3.0.0", "2.7.0rc1"])
def test_the_guard_takes_the_public_route_outside_the_tested_versions(version, lightning_version):
    lightning_version(version)
    assert not compat.PRIVATE and compat.HOOK_NAME_ATTR is None
    for automatic in (True, False):
        assert answers(fake_trainer(automatic)) == PUBLIC[automatic]
    module = Automatic()
    module.toggle_optimizer = module.untoggle_optimizer = lambda optimizer: None  # no trainer here
    module.toggled_optimizer = lambda optimizer: pytest.fail("took Lightning's toggled_optimizer")
    with compat.toggled_optimizer(module, None):
        pass


@pytest.mark.parametrize("version", ["2.6.0", "2.6.4", "2.6.6", "2.6.9"])
def test_the_guard_reads_private_state_on_the_tested_versions(version, lightning_version):
    lightning_version(version)
    assert compat.PRIVATE and compat.HOOK_NAME_ATTR == "_current_fx_name"
    for automatic in (True, False):
        assert answers(fake_trainer(automatic)) == (True, 40, 41)


def test_missing_private_state_takes_the_public_route(monkeypatch):
    monkeypatch.setattr(compat, "PRIVATE", True)
    for automatic in (True, False):
        assert answers(fake_trainer(automatic, private_state=False)) == PUBLIC[automatic]


def test_the_tested_range_starts_at_the_declared_floor():
    # pyproject.toml's floor is what CI's floor venv tests (.ci/run): the private route is tested there.
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = next(Requirement(d) for d in dependencies if Requirement(d).name == "lightning")
    assert [(s.operator, s.version) for s in declared.specifier] == \
        [(s.operator, s.version) for s in compat.TESTED_LIGHTNING if s.operator == ">="]


class Toggling(lightning.LightningModule):
    """Parameters in one optimizer, in the other, in both, in one but frozen beforehand, and in
    none; records requires_grad inside and after each optimizer's context, by both routes."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.first, self.second, self.shared, self.frozen, self.alone = (nn.Linear(2, 1) for _ in range(5))
        self.frozen.requires_grad_(False)
        self.states: dict[tuple[str, int], list[dict[str, bool]]] = {}

    def grads(self) -> dict[str, bool]:
        return {name: p.requires_grad for name, p in self.named_parameters()}

    def training_step(self, batch, batch_idx: int) -> None:
        for route in ("private", "public"):
            for i, optimizer in enumerate(self.optimizers()):
                with pytest.MonkeyPatch.context() as patch:
                    patch.setattr(compat, "PRIVATE", route == "private")
                    with compat.toggled_optimizer(self, optimizer):
                        inside = self.grads()
                self.states[route, i] = [inside, self.grads()]

    def configure_optimizers(self):
        params = lambda *modules: [p for m in modules for p in m.parameters()]  # noqa: E731
        return (torch.optim.SGD(params(self.first, self.shared), lr=0.1),
                torch.optim.SGD(params(self.second, self.shared, self.frozen), lr=0.1))


def test_toggled_optimizer_fallback_leaves_requires_grad_as_lightnings_does(tmp_path):
    module = Toggling()
    if compat.private_api_usable():
        assert callable(getattr(module, "toggled_optimizer", None))  # the private route is Lightning's own
    before = module.grads()
    lightning.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False,
                      default_root_dir=tmp_path).fit(module, DataLoader(TensorDataset(torch.randn(2, 2))))
    for i in range(2):
        assert module.states["public", i] == module.states["private", i]
    frozen_out = lambda mine: {name: value and (name.split(".")[0] in mine or name.split(".")[0] == "alone")  # noqa: E731
                               for name, value in before.items()}
    assert module.states["public", 0] == [frozen_out({"first", "shared"}), before]
    assert module.states["public", 1] == [frozen_out({"second", "shared", "frozen"}), before]
    assert not any(v for name, v in module.states["public", 1][0].items() if name.startswith("frozen"))


def test_the_hook_name_is_set_without_nn_modules_checks(monkeypatch):
    module = GenerativeModule(optimizer={"_target_": "torch.optim.SGD", "lr": 0.1})
    if compat.private_api_usable():  # the name Lightning really sets around its hooks
        assert compat.HOOK_NAME_ATTR in vars(lightning.LightningModule())
    for name in (compat.HOOK_NAME_ATTR, None):  # the fast path, and nn.Module's
        monkeypatch.setattr(compat, "HOOK_NAME_ATTR", name)
        module._current_fx_name = "training_step"
        assert vars(module)["_current_fx_name"] == "training_step"
        module.net = nn.Linear(1, 1)  # other attributes still go through nn.Module
        assert "net" in module._modules and "net" not in vars(module)
        del module.net
