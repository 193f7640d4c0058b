"""While training, the objects that existed before it are out of the garbage collector's reach;
after training (or an error) they are back."""

import gc

import lightning as L
import pytest
import torch

from genexp.callbacks.gc_freeze import FreezeLongLivedObjects


class Tiny(L.LightningModule):
    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.fail_at = fail_at
        self.frozen_during_steps: list[int] = []

    def training_step(self, batch, batch_idx):
        self.frozen_during_steps.append(gc.get_freeze_count())
        if batch_idx == self.fail_at:
            raise RuntimeError("injected")
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("fail_at", [None, 1])
def test_long_lived_objects_are_frozen_only_while_training(fail_at, tmp_path):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=2)
    model = Tiny(fail_at)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[FreezeLongLivedObjects()], default_root_dir=tmp_path)
    assert gc.get_freeze_count() == 0
    if fail_at is None:
        trainer.fit(model, data)
    else:
        with pytest.raises(RuntimeError, match="injected"):
            trainer.fit(model, data)
    assert model.frozen_during_steps and min(model.frozen_during_steps) > 10_000  # torch, Lightning, the model
    assert gc.get_freeze_count() == 0
