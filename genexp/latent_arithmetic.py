"""Latent arithmetic on a saved run: `python -m genexp.latent_arithmetic run=<run dir or checkpoint>
[source=0] [target=1] [alphas=[0,0.5,1,1.5,2]] [n_images=8] [n_attribute=2000] [split=test] [out=<png>]
[data.label_attribute=Blond_Hair ...]`

The attribute vector is mean(z | label = target) - mean(z | label = source) over training
examples, added in multiples `alphas` to the codes of `split` examples labelled `source`.
`data.*` keys override the run's data config (e.g. another CelebA attribute as the label).
Writes <run dir>/latent_arithmetic/<split>_<source>_to_<target>.png, or `out`.
"""

from pathlib import Path

from omegaconf import OmegaConf
from torchvision.utils import save_image

from genexp.callbacks.arithmetic import arithmetic_grid
from genexp.images import evaluating
from genexp.errors import ConfigError
from genexp.saved_run import SavedRun, exit_on_user_error, parse_cli

USAGE = __doc__.split("\n\n")[0]
DEFAULTS = {"run": None, "source": 0, "target": 1, "alphas": [0.0, 0.5, 1.0, 1.5, 2.0], "n_images": 8,
            "n_attribute": 2000, "split": "test", "out": None, "data": {}}


@exit_on_user_error
def main(argv: list[str]) -> None:
    args = parse_cli(argv, USAGE, DEFAULTS)
    saved = SavedRun.open(args.run)
    saved.cfg.data = OmegaConf.merge(saved.cfg.data, args.data)
    datamodule, model = saved.build()
    if not hasattr(model, "encode") or not hasattr(model, "decode"):
        raise ConfigError(f"run={args.run}: {type(model).__name__} has no encode/decode, so no latent space")
    if not getattr(datamodule, "num_classes", None) or not hasattr(datamodule, "to_images"):
        raise ConfigError("latent arithmetic needs labelled images, but data.num_classes is null; "
                          "set a label, e.g. data.label_attribute=Smiling data.num_classes=2 for celeba")
    with evaluating(model):
        grid = arithmetic_grid(model, datamodule, args.source, args.target, list(args.alphas),
                               args.n_images, args.n_attribute, args.split)
    if grid is None:
        raise ConfigError(f"source={args.source}, target={args.target}: the data has no examples with one of these labels")
    out = Path(args.out) if args.out else saved.run_dir / "latent_arithmetic" / f"{args.split}_{args.source}_to_{args.target}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
