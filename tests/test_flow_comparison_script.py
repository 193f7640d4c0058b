"""scripts/flow_comparison.py --quick runs end to end: every flow of both libraries gets its row,
trained on the same arrays, with finite scores."""

import json
import math
import os
import subprocess
import sys

import zuko  # noqa: F401  (the comparison needs it: the benchmark extra installs it)

from conftest import REPO


def test_quick_comparison_writes_a_row_per_flow_without_nan(tmp_path):
    out = tmp_path / "flow_comparison.md"
    finished = subprocess.run([sys.executable, str(REPO / "scripts" / "flow_comparison.py"), "--quick",
                               "--out", str(out), "--work", str(tmp_path / "work")],
                              cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    table = out.read_text()
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {tuple(cells[1:3]): cells[3:] for line in table.splitlines() if line.startswith("| moons |")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    assert set(rows) == {(library, model) for library in ("genexp", "zuko") for model in ("realnvp", "maf", "nsf")}
    for key, (params, gap_range, *numbers) in rows.items():
        values = [float(params.replace(",", "")), *map(float, gap_range.split(" – ")), *map(float, numbers)]
        assert len(values) == 6 and all(math.isfinite(v) for v in values), (key, values)
    assert len(report["runs"]) == 6
    for run in report["runs"]:
        assert math.isfinite(run["nll_gap"]) and run["params"] > 0 and run["epochs"] == 2, run
        assert run["oracle_nll"] == report["runs"][0]["oracle_nll"]  # the same test points for every flow
    assert report["data"]["moons/seed0"]["n_train"] == 2048
    assert "moons: genexp NSF gap" in table
