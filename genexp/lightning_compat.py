"""The Lightning internals genexp reads, all here, behind one version guard.

genexp's per-step code needs a few facts about the running fit: whether this step's metrics reach
the loggers, the step number Lightning logs at, the batch count across epochs, a context in which
only one optimizer's parameters need gradients, and a cheap way to record the name of the hook
Lightning is running. Lightning keeps most of these in private state, and reading that state is
cheaper than the public routes (a few ms per step matter for small models: docs/benchmark.md).
Private state can change in any release, so:

- on the Lightning versions genexp is tested against (TESTED_LIGHTNING: the floor of pyproject.toml,
  which CI tests, up to the newest minor release the main suite runs), each function reads the
  private state, and takes the public route where an attribute is missing;
- on any other version, each takes the public route.

Both routes give the same answers from `on_train_batch_start` through `training_step` (the public
`batches_that_stepped` and `logs_this_step` run one step ahead under automatic optimization after
the optimizer has stepped, e.g. in `on_train_batch_end`); tests/test_lightning_compat.py checks
this on real fits.
"""

from contextlib import contextmanager
from typing import Iterator

import lightning
from packaging.specifiers import SpecifierSet
from packaging.version import Version

# The versions whose internals genexp is tested against: the floor of pyproject.toml (CI's floor
# venv) to the newest minor release the main suite runs.
TESTED_LIGHTNING = SpecifierSet(">=2.6.0,<2.7")


def private_api_usable(version: str | None = None) -> bool:
    """Whether `version` (default: the installed Lightning) is one genexp reads private state of."""
    return Version(lightning.__version__ if version is None else version) in TESTED_LIGHTNING


PRIVATE = private_api_usable()

# The attribute Lightning sets on the module around every hook call (tens of times a step), or
# None where the version is not a tested one. nn.Module.__setattr__'s checks for parameters,
# submodules and buffers cost more than the hook itself; this plain string never is one, so
# GenerativeModule.__setattr__ stores it directly (object.__setattr__ still honours a property,
# should Lightning ever make it one).
HOOK_NAME_ATTR: str | None = "_current_fx_name" if PRIVATE else None


def attached_trainer(module):
    """The module's Trainer, or None when it is used outside one (its public property raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def logs_this_step(trainer) -> bool:
    """Whether Lightning writes step metrics to the loggers after this training batch."""
    if PRIVATE:
        try:
            return trainer._logger_connector.should_update_logs
        except AttributeError:
            pass
    # Lightning's rule from public state: every log_every_n_steps-th batch that steps (counted
    # from 1), and the last batch before a requested stop.
    every = trainer.log_every_n_steps
    return every > 0 and ((batches_that_stepped(trainer) + 1) % every == 0 or trainer.should_stop)


def batches_that_stepped(trainer) -> int:
    """The step Lightning logs step metrics at: the training batches so far whose optimizer stepped
    (once per batch whatever the number of optimizers; accumulating batches do not count)."""
    if PRIVATE:
        try:
            return trainer.fit_loop.epoch_loop._batches_that_stepped
        except AttributeError:
            pass
    if trainer.lightning_module.automatic_optimization:
        # One optimizer, one step per batch that stepped; read before it steps (training_step).
        return trainer.global_step
    # global_step counts every optimizer's steps (two a batch for a GAN); manual optimization
    # accumulates nothing, so every batch so far counts once.
    return total_batch_idx(trainer)


def total_batch_idx(trainer) -> int:
    """The index of the current training batch counted across epochs (restored on resume)."""
    if PRIVATE:
        try:
            return trainer.fit_loop.epoch_loop.total_batch_idx
        except AttributeError:
            pass
    # The fit loop's own property (Lightning 1.x and 2.x), which forwards to the epoch loop's.
    return trainer.fit_loop.total_batch_idx


def toggled_optimizer(module, optimizer):
    """A context in which only `optimizer`'s parameters require gradients (the others'
    requires_grad is restored on exit): LightningModule.toggled_optimizer, which Lightning has from
    2.5.2, or the toggle_optimizer/untoggle_optimizer pair it is made of."""
    if PRIVATE:
        method = getattr(module, "toggled_optimizer", None)
        if method is not None:
            return method(optimizer)
    return _toggle_untoggle(module, optimizer)


@contextmanager
def _toggle_untoggle(module, optimizer) -> Iterator[None]:
    module.toggle_optimizer(optimizer)
    try:
        yield
    finally:
        module.untoggle_optimizer(optimizer)
