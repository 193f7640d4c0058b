"""Every model config with every data config: it composes, and it either survives a
fast_dev_run or refuses the pair at once with a clear GenexpError (never a deep traceback).

Parametrised over the files in conf/, so new configs are covered without touching this file.
"""

import pytest

from conftest import compose_config, group_options
from fake_data import FAKE_DATA
from genexp.errors import GenexpError
from genexp.train import run
from genexp.validate import validate_config

PAIRS = [(m, d) for m in group_options("model") for d in group_options("data")]


@pytest.mark.parametrize(("model", "data"), PAIRS, ids=[f"{m}-{d}" for m, d in PAIRS])
def test_model_data_pair_fast_dev_run(model, data, tmp_path):
    overrides = FAKE_DATA[data](tmp_path / "data") if data in FAKE_DATA else []
    cfg = compose_config([f"model={model}", f"data={data}", "debug=fdr", "logger=none", *overrides],
                         tmp_path / "run")
    try:
        validate_config(cfg)
        run(cfg)
    except GenexpError as error:
        # A refusal must say which key is at fault.
        assert "model." in str(error) or "data." in str(error), str(error)
        return
    assert (tmp_path / "run" / "metrics.json").is_file()
