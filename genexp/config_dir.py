"""Where the Hydra config tree lives, for a source checkout, an editable install or a wheel."""

from pathlib import Path


def config_dir() -> str:
    package = Path(__file__).resolve().parent
    # A wheel carries the tree inside the package; a checkout keeps it beside the package.
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"genexp's config tree (conf/config.yaml) was not found in {package / 'conf'} "
        f"or {package.parent / 'conf'}; reinstall genexp"
    )
