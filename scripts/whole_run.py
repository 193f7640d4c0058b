"""Whole runs: a genexp command line from start to exit against a plain script doing the same work.

    OMP_NUM_THREADS=1 taskset -c 1 python scripts/whole_run.py [--repeats 3] [--epochs 20]
        [--entries run_realnvp_moons run_nsf_checkerboard] [--out outputs/benchmarks/whole_run.json]

Each entry `run_<model>_<data>` times, in subprocesses, `python -m genexp model=<model> data=<data>
trainer.max_epochs=<epochs>` (everything a user gets: start-up, validation each epoch, checkpoints,
the views, TensorBoard, the test, the closing report) and `python scripts/plain/flow_2d.py`, which
trains the same genexp.nets network on the same points (genexp's toy2d data for the same seed, saved
to an .npz first) with the same batch size, epochs and Adam, validates each epoch, tests the best
weights, saves them and draws one figure. The same network rather than zuko's: the entry measures what
genexp adds around training, not the difference between two flow implementations
(scripts/flow_comparison.py compares those).

Both run under this process's CPU affinity and environment (so taskset and OMP_NUM_THREADS above
apply to both), `repeats` times each, alternating which runs first; the medians are reported.
An entry has the shape of scripts/benchmark.py's: genexp and baseline (median wall seconds), ratio =
baseline / genexp (higher is better, 1 = as fast), unit, target and met, and beside them the CPU
seconds of each (steadier than wall time on a shared machine) and both runs' test NLL.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLAIN = REPO / "scripts" / "plain" / "flow_2d.py"
TARGET = 0.85  # plain wall time / genexp wall time


def save_arrays(data: str, path: Path) -> None:
    """genexp's points of `data=<data>` (the config's sizes and seed), every split, as an .npz."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from genexp.config_dir import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"data={data}"])
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    import numpy as np

    np.savez(path, **{split: dataset.tensors[0].numpy() for split, dataset in datamodule.splits.items()})


def timed(command: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one child from start to exit; its output goes to `log`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("w") as out:
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def whole_run(model: str, data: str, epochs: int = 20, repeats: int = 3, work: Path | None = None,
              target: float = TARGET) -> dict:
    """The entry run_<model>_<data>: `repeats` genexp runs and plain runs, alternately."""
    work = Path(work or REPO / "outputs" / "whole_run") / f"{model}_{data}"
    work.mkdir(parents=True, exist_ok=True)
    arrays = work / "arrays.npz"
    save_arrays(data, arrays)
    times: dict[str, list[tuple[float, float]]] = {"genexp": [], "plain": []}
    test_nll = {}
    for i in range(repeats):
        run_dir = work / f"genexp_{i}_{time.time_ns()}"
        commands = {
            "genexp": [sys.executable, "-m", "genexp", f"model={model}", f"data={data}",
                       f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}"],
            "plain": [sys.executable, str(PLAIN), str(arrays), str(work / f"plain_{i}"), f"--net={model}",
                      f"--epochs={epochs}"],
        }
        for name in (["genexp", "plain"] if i % 2 == 0 else ["plain", "genexp"]):
            times[name].append(timed(commands[name], work / f"{name}_{i}.log"))
        test_nll["genexp"] = json.loads((run_dir / "metrics.json").read_text())["metrics"]["test/nll"]
        test_nll["plain"] = json.loads((work / f"plain_{i}.log").read_text().splitlines()[-1])["test_nll"]
    wall = {name: statistics.median(t[0] for t in runs) for name, runs in times.items()}
    cpu = {name: statistics.median(t[1] for t in runs) for name, runs in times.items()}
    ratio = wall["plain"] / wall["genexp"]
    return {"genexp": wall["genexp"], "baseline": wall["plain"], "ratio": ratio, "unit": "s", "target": target,
            "met": ratio >= target, "genexp_cpu_s": cpu["genexp"], "baseline_cpu_s": cpu["plain"],
            "cpu_ratio": cpu["plain"] / cpu["genexp"], "repeats": repeats, "epochs": epochs,
            "wall_s": {name: [round(t[0], 2) for t in runs] for name, runs in times.items()},
            "test_nll": test_nll, "baseline_script": str(PLAIN.relative_to(REPO)) + f" --net={model}"}


def run_realnvp_moons(repeats: int = 3, epochs: int = 20, work: Path | None = None) -> dict:
    return whole_run("realnvp", "moons", epochs, repeats, work)


def run_nsf_checkerboard(repeats: int = 3, epochs: int = 20, work: Path | None = None) -> dict:
    return whole_run("nsf", "checkerboard", epochs, repeats, work)


ENTRIES = {"run_realnvp_moons": run_realnvp_moons, "run_nsf_checkerboard": run_nsf_checkerboard}


def table(entries: dict[str, dict]) -> str:
    lines = ["| entry | genexp s | plain s | ratio | target | met | CPU s genexp / plain | test NLL genexp / plain |",
             "|---|---|---|---|---|---|---|---|"]
    for name, e in entries.items():
        lines.append(f"| {name} | {e['genexp']:.1f} | {e['baseline']:.1f} | {e['ratio']:.2f} | >= {e['target']} | "
                     f"{'yes' if e['met'] else 'no'} | {e['genexp_cpu_s']:.1f} / {e['baseline_cpu_s']:.1f} | "
                     f"{e['test_nll']['genexp']:.3f} / {e['test_nll']['plain']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", nargs="+", choices=ENTRIES, default=list(ENTRIES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "whole_run")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks" / "whole_run.json")
    args = parser.parse_args()
    entries = {name: ENTRIES[name](args.repeats, args.epochs, args.work) for name in args.entries}
    print(table(entries))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": date.today().isoformat(), "machine": platform.processor() or
                                    platform.machine(), "cpus": len(os.sched_getaffinity(0)),
                                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "entries": entries},
                                   indent=2))


if __name__ == "__main__":
    main()
