"""Training scalars: step values where Lightning writes them, epoch means weighted by batch size."""

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from conftest import mlp_nets
from genexp.models.train_log import TrainLog
from genexp.models.vae import VAE

ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3}


def test_epoch_means_weight_by_batch_size_and_skip_steps_without_a_name():
    log = TrainLog()
    log.add({"a": torch.tensor(1.0), "b": torch.tensor(10.0)}, batch_size=4)
    log.add({"a": torch.tensor(3.0)}, batch_size=2)
    log.add({"a": torch.tensor(5.0), "b": torch.tensor(20.0, requires_grad=True) * 1}, batch_size=2)
    assert log.names == ("a", "b") and log.values.tolist() == [5.0, 20.0]
    means = log.epoch_means()
    assert means["a"].item() == pytest.approx((4 * 1 + 2 * 3 + 2 * 5) / 8)
    assert means["b"].item() == pytest.approx((4 * 10 + 2 * 20) / 6)
    assert not means["b"].requires_grad
    assert log.epoch_means() == {}


def test_step_values_follow_log_every_n_steps_and_epoch_means_match_the_steps(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(50, 1, 4, 4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(50)), batch_size=8)
    model = VAE([1, 4, 4], latent_dim=2, **mlp_nets([8]), value_range=[0, 1], optimizer=ADAM)
    seen = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append((trainer.current_epoch, len(batch[0]), pl_module.train_log.values[pl_module.train_log.names.index("train/loss")].item()))

    trainer = L.Trainer(max_epochs=2, log_every_n_steps=3, logger=CSVLogger(tmp_path), callbacks=[Spy()],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, train_dataloaders=loader)
    rows = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    records = [dict(zip(header, r.split(","))) for r in rows[1:]]
    step_rows = [r for r in records if r["train/loss_step"]]
    # 7 batches per epoch, 14 in all: Lightning writes steps 2, 5, 8 and 11 (every third)
    assert [int(r["step"]) for r in step_rows] == [2, 5, 8, 11]
    assert [float(r["train/loss_step"]) for r in step_rows] == pytest.approx([seen[i][2] for i in (2, 5, 8, 11)])
    epoch_rows = [r for r in records if r["train/loss_epoch"]]
    for epoch, row in enumerate(epoch_rows):
        steps = [(n, loss) for e, n, loss in seen if e == epoch]
        expected = sum(n * loss for n, loss in steps) / sum(n for n, _ in steps)
        assert float(row["train/loss_epoch"]) == pytest.approx(expected, rel=1e-5)
        assert float(row["lr"]) == pytest.approx(1e-3)
    assert trainer.callback_metrics["train/loss"].item() == pytest.approx(float(epoch_rows[-1]["train/loss_epoch"]))
