"""A 2D flow trained by a hand-written PyTorch loop: the baseline of scripts/whole_run.py.

    python scripts/plain/flow_2d.py ARRAYS.npz OUT_DIR [--net realnvp|nsf] [--epochs 20] [--seed 0]

The work of `python -m genexp model=<net> data=<set> trainer.max_epochs=<epochs>`, written out:
the same points (ARRAYS.npz: train, val and test, saved by whole_run.py from genexp's toy2d data
module), the same network (genexp.nets, sized as conf/model/<net>.yaml), Adam as
conf/optimizer/adam.yaml, batch size 256; the validation NLL each epoch, the test NLL of the best
epoch's weights at the end, those weights saved, and one figure: samples over the data.
Prints one JSON line: the best epoch's val NLL and the test NLL.
"""

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

# Each net as its config in conf/model/<net>.yaml builds it for points in the plane
# (tests/test_whole_run.py checks that they agree).
NETS = {
    "realnvp": ("genexp.nets.realnvp", "RealNVP", {"mask": "auto", "n_couplings": 16, "hidden_dims": [128, 128],
                                                   "couplings_per_scale": 3, "n_scales": 2, "hidden_channels": 32}),
    "nsf": ("genexp.nets.nsf", "NSF", {"transform": "auto", "n_transforms": 4, "bins": 16, "tail_bound": 5.0,
                                       "hidden_dims": [128, 128], "hidden_channels": 32}),
}
BATCH_SIZE, LR, BETAS = 256, 1e-3, (0.9, 0.999)


def build(net: str) -> torch.nn.Module:
    module, name, kwargs = NETS[net]
    return getattr(__import__(module, fromlist=[name]), name)(shape=(2,), **kwargs)


@torch.no_grad()
def nll(flow: torch.nn.Module, points: torch.Tensor) -> float:
    flow.eval()
    value = torch.cat([-flow.log_prob(batch) for batch in points.split(BATCH_SIZE)]).mean().item()
    flow.train()
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arrays", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--net", choices=NETS, default="realnvp")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    points = {split: torch.from_numpy(array) for split, array in np.load(args.arrays).items()}
    flow = build(args.net)
    optimizer = torch.optim.Adam(flow.parameters(), lr=LR, betas=BETAS)
    best_nll, best_state = float("inf"), None
    for epoch in range(args.epochs):
        for index in torch.randperm(len(points["train"])).split(BATCH_SIZE):
            loss = -flow.log_prob(points["train"][index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        val_nll = nll(flow, points["val"])
        if val_nll < best_nll:
            best_nll, best_state = val_nll, copy.deepcopy(flow.state_dict())
    flow.load_state_dict(best_state)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(best_state, args.out / "best.pt")
    test_nll = nll(flow, points["test"])

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        flow.eval()
        samples = flow.sample(2000).numpy()
    data = points["val"][:2000].numpy()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
    ax.scatter(data[:, 0], data[:, 1], s=2, c="0.6", label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:orange", alpha=0.6, label="samples")
    ax.set_aspect("equal")
    ax.set_title(f"{args.net}: test nll {test_nll:.3f} nats")
    fig.savefig(args.out / "samples.png")
    print(json.dumps({"val_nll": best_nll, "test_nll": test_nll}))


if __name__ == "__main__":
    main()
