"""What the 2D density view (callbacks.density_2d) costs a 2D flow run.

    python scripts/density2d_cost.py [--repeats 3] [--epochs 20] [--out outputs/density2d_cost] [OVERRIDE ...]

Runs `python -m genexp model=realnvp data=moons trainer.max_epochs=20` (plus any OVERRIDEs) with the
callback and with `callbacks.density_2d=null`, alternately, `--repeats` times each (OMP_NUM_THREADS=1
unless set), and prints one JSON object:

  runs            each run's wall time (metrics.json wall_time_s: the run from data to record, without
                  the interpreter's start and imports) and the time spent inside Density2D's hooks
  share           (median wall with - median wall without) / median wall with: the callback's share
                  of the run's wall time, from the two kinds of run (noisy on a busy machine)
  hook_share      median over the runs with the callback of (time in its hooks / wall time): the same
                  share, timed inside the run (steadier)
  hook_s_per_epoch, hook_s_per_drawing, drawings   the hooks' time per epoch of training and per
                  PNG written (epoch_NNNN.png and final.png)

Other settings of the view are OVERRIDEs (callbacks.density_2d.every_n_epochs=1); another version of
it, a class named Density2D in a module on PYTHONPATH: callbacks.density_2d._target_=module.Density2D.
"""

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOOKS = ("setup", "on_fit_start", "on_validation_epoch_end", "on_train_epoch_end", "on_fit_end")


def child(timing_file: str, overrides: list[str]) -> None:
    """One run through genexp's command line, with the hooks of its Density2D callback (whatever
    module `callbacks.density_2d._target_` names it from) timed into timing_file."""
    import genexp.train

    spent = [0.0]

    def timed(hook):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - started
        return wrapper

    make_trainer = genexp.train.make_trainer

    def make_timed_trainer(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        for callback in trainer.callbacks:
            if type(callback).__name__ == "Density2D":
                for name in HOOKS:
                    setattr(callback, name, timed(getattr(callback, name)))
        return trainer

    genexp.train.make_trainer = make_timed_trainer
    atexit.register(lambda: Path(timing_file).write_text(json.dumps({"hook_s": spent[0]})))
    sys.argv = ["genexp", *overrides]
    from genexp.cli import main
    main()


def one_run(run_dir: Path, overrides: list[str]) -> dict:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    timing = run_dir.with_suffix(".timing.json")
    command = [sys.executable, __file__, "--child", str(timing), *overrides, f"hydra.run.dir={run_dir}",
               "print_config=false", "trainer.enable_progress_bar=false"]
    finished = subprocess.run(command, cwd=REPO, env={"OMP_NUM_THREADS": "1", **os.environ},
                              capture_output=True, text=True)
    if finished.returncode != 0:
        sys.exit(f"run failed: {' '.join(command)}\n{finished.stderr[-3000:]}")
    record = json.loads((run_dir / "metrics.json").read_text())
    density = run_dir / "density"
    return {"wall_time_s": record["wall_time_s"], "hook_s": round(json.loads(timing.read_text())["hook_s"], 3),
            "epochs": record["epochs"], "drawings": len(list(density.glob("*.png"))) if density.is_dir() else 0}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "density2d_cost")
    parser.add_argument("overrides", nargs="*", help="more genexp overrides, for both kinds of run")
    args = parser.parse_args()
    base = ["model=realnvp", "data=moons", f"trainer.max_epochs={args.epochs}", *args.overrides]
    kinds = {"with": base, "without": [*base, "callbacks.density_2d=null"]}
    runs = {kind: [] for kind in kinds}
    for i in range(args.repeats):
        for kind, overrides in kinds.items():
            print(f"run {i + 1}/{args.repeats} {kind} density_2d ...", file=sys.stderr, flush=True)
            runs[kind].append(one_run(args.out / f"{kind}_{i}", overrides))
    wall = {kind: statistics.median(r["wall_time_s"] for r in results) for kind, results in runs.items()}
    with_runs = runs["with"]
    hook_s = statistics.median(r["hook_s"] for r in with_runs)
    drawings = with_runs[0]["drawings"]
    report = {
        "command": "python -m genexp " + " ".join(base),
        "runs": runs,
        "median_wall_time_s": wall,
        "share": round((wall["with"] - wall["without"]) / wall["with"], 4),
        "hook_share": round(statistics.median(r["hook_s"] / r["wall_time_s"] for r in with_runs), 4),
        "hook_s_per_epoch": round(hook_s / with_runs[0]["epochs"], 4),
        "hook_s_per_drawing": round(hook_s / max(drawings, 1), 4),
        "drawings": drawings,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
