"""A finished run, rebuilt from its directory: the saved config (.hydra/config.yaml), its data
module, and its model with the weights of a checkpoint (loaded with weights_only=True)."""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from genexp.checkpoint_io import read_checkpoint
from genexp.console import quiet_library_chatter
from genexp.errors import CheckpointError, ConfigError, find_user_error
from genexp.train import instantiate_data_and_model
from genexp.validate import validate_config


@dataclass
class SavedRun:
    run_dir: Path
    checkpoint: Path
    cfg: DictConfig
    model_overrides: list[str] = field(default_factory=list)  # key=value changes of the saved model config

    @classmethod
    def open(cls, path: str | Path) -> "SavedRun":
        """`path`: a run directory (its best checkpoint, else last.ckpt) or a checkpoint file in
        <run dir>/checkpoints/."""
        path = Path(path).expanduser().resolve()
        run_dir = path.parent.parent if path.is_file() else path
        config = run_dir / ".hydra" / "config.yaml"
        if not config.is_file():
            raise ConfigError(f"run={path}: no saved config at {config}; give a run directory written by "
                              f"`python -m genexp` or a checkpoint in its checkpoints/ folder")
        checkpoint = path if path.is_file() else cls._default_checkpoint(run_dir)
        cfg = OmegaConf.load(config)
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)  # was ${hydra:runtime.output_dir}
        return cls(run_dir, checkpoint, cfg)

    @staticmethod
    def _default_checkpoint(run_dir: Path) -> Path:
        metrics = run_dir / "metrics.json"
        best = json.loads(metrics.read_text()).get("best_checkpoint") if metrics.is_file() else None
        # By name inside this directory: a run directory may have been moved since.
        for candidate in (run_dir / "checkpoints" / Path(best or "-").name, run_dir / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise ConfigError(f"run={run_dir}: no checkpoint (neither the best_checkpoint of metrics.json nor "
                          f"checkpoints/last.ckpt); pass a checkpoint file as run=<path>.ckpt")

    def override_model(self, changes: DictConfig | dict | None) -> None:
        """Change keys of the saved model config that leave its weights as they are, e.g. a diffusion
        model's `model.sampler.steps`; checked by genexp.validate, and by the checkpoint when built."""
        leaves = OmegaConf.to_container(changes, resolve=True) if isinstance(changes, DictConfig) else changes or {}
        for key, value in _leaves(leaves, "model"):
            if OmegaConf.select(self.cfg, key, default=_MISSING) is _MISSING:
                raise ConfigError(f"{key} is not a key of this run's model ({self.cfg.model._target_}); "
                                  f"see {self.run_dir / '.hydra' / 'config.yaml'}")
            OmegaConf.update(self.cfg, key, value)
            self.model_overrides.append(f"{key}={value}")
        if self.model_overrides:
            validate_config(self.cfg)

    def build(self) -> tuple[L.LightningDataModule, L.LightningModule]:
        """The data module and the model holding the checkpoint's weights, in eval mode."""
        datamodule, model = instantiate_data_and_model(self.cfg)
        try:
            state = read_checkpoint(self.checkpoint, model)["state_dict"]
        except CheckpointError as error:
            if not self.model_overrides:
                raise
            raise ConfigError(f"{', '.join(self.model_overrides)} changes the network, so the checkpoint's weights "
                              f"do not fit it ({error}); only keys that leave the weights as they are (a sampler's "
                              f"settings such as model.sampler.steps) can change after training") from None
        model.load_state_dict(state)
        return datamodule, model.eval()


_MISSING = object()


def _leaves(node: dict, prefix: str):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}", value


def parse_cli(argv: list[str], usage: str, defaults: dict) -> DictConfig:
    """`key=value` arguments over `defaults`, and `model.<key>=value` changes of the saved model config
    (SavedRun.override_model); `run` is required."""
    if any(a in ("-h", "--help") for a in argv) or not argv:
        print(usage)
        sys.exit(0 if argv else 2)
    args = OmegaConf.merge(defaults, OmegaConf.from_cli(argv))
    unknown = sorted(set(args) - set(defaults) - {"model"})
    if unknown:
        print(f"genexp: error: {', '.join(unknown)} not known; allowed: {', '.join(defaults)}, and model.<key>=... "
              f"for keys of the run's model that leave its weights as they are\n{usage}", file=sys.stderr)
        sys.exit(2)
    if not args.get("run"):
        print(f"genexp: error: run=<run dir or checkpoint> is required\n{usage}", file=sys.stderr)
        sys.exit(2)
    return args


def exit_on_user_error(main):
    """Report a GenexpError (also one that Hydra's instantiate wrapped) as one line and exit 2,
    like `python -m genexp`."""
    def wrapped(argv: list[str] | None = None) -> None:
        quiet_library_chatter()
        try:
            main(sys.argv[1:] if argv is None else argv)
        except Exception as error:
            user_error = find_user_error(error)
            if user_error is None:
                raise
            print(f"genexp: error: {user_error}", file=sys.stderr)
            sys.exit(2)

    return wrapped
