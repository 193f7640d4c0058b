"""Sample from a saved run: `python -m genexp.sample run=<run dir or checkpoint> n=64 [seed=0] [out=<dir>] [model.<key>=...]`.

Writes samples_n<n>_seed<seed>.png (a grid) and .npz (`images` in [0, 1], shape (N, C, H, W),
and `labels`) to <run dir>/samples/ or `out`. Conditional models draw n samples per label:
one grid row per label, and one grid per label (..._label<k>.png) beside it. `model.<key>=value`
changes a key of the saved model config that leaves the weights as they are, such as a diffusion
model's sampler (model.sampler.steps=250 model.sampler.name=ddpm) or guidance (model.guidance_scale=3).
"""

import math
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from genexp.images import image_grid
from genexp.errors import ConfigError
from genexp.saved_run import SavedRun, exit_on_user_error, parse_cli

USAGE = __doc__.split("\n\n")[0]


def draw(saved: SavedRun, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n samples (n per label for conditional models) as images in [0, 1], and their labels."""
    datamodule, model = saved.build()
    if not hasattr(datamodule, "to_images"):
        raise ConfigError(f"run={saved.run_dir}: data {saved.cfg.data._target_} is not images; "
                          f"genexp.sample writes image grids")
    labels = torch.arange(model.num_classes).repeat_interleave(n) if model.num_classes else None
    with torch.no_grad():
        samples = model.sample(len(labels) if labels is not None else n, labels=labels,
                               generator=torch.Generator().manual_seed(seed))
    return datamodule.to_images(samples.cpu()), labels


def write(images: torch.Tensor, labels: torch.Tensor | None, n: int, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(stem.with_suffix(".npz"), images=images.numpy(),
                        labels=(labels if labels is not None else torch.full((len(images),), -1)).numpy())
    nrow = n if labels is not None else math.ceil(math.sqrt(n))
    written = [stem.with_suffix(".npz"), stem.with_suffix(".png")]
    save_image(image_grid(images, nrow), written[-1])
    for label in labels.unique().tolist() if labels is not None else []:
        written.append(stem.with_name(f"{stem.name}_label{label}.png"))
        save_image(image_grid(images[labels == label], math.ceil(math.sqrt(n))), written[-1])
    return written


@exit_on_user_error
def main(argv: list[str]) -> None:
    args = parse_cli(argv, USAGE, {"run": None, "n": 64, "seed": 0, "out": None})
    if not isinstance(args.n, int) or args.n < 1:
        raise ConfigError(f"n={args.n!r} is not allowed: it must be an integer >= 1")
    saved = SavedRun.open(args.run)
    saved.override_model(args.get("model"))
    images, labels = draw(saved, args.n, args.seed)
    out = Path(args.out) if args.out else saved.run_dir / "samples"
    for path in write(images, labels, args.n, out / f"samples_n{args.n}_seed{args.seed}"):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
