"""Diffusion against a GAN on the bundled digits at equal wall-clock training budgets.

    python scripts/diffusion_vs_gan.py [--budget 00:00:04:00] [--seeds 0 1 2] [--cpu 0] [--out docs/diffusion_vs_gan]

Each (model, seed) is a plain `python -m genexp model=<ddpm|dcgan> data=digits seed=<s>` run that
trains until `trainer.max_time` (no epoch limit), then `python -m genexp.evaluate` scores 1,000
samples against the test split under the digits classifier's features (FID, KID, precision,
recall). With --cpu N every run is pinned to that core with one thread, so that other work on the
machine's other cores leaves the budgets equal. Writes <out>.json and <out>.md (a table with the mean and range over seeds, the command
lines, machine and date).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("ddpm", "dcgan")
SCORES = ("fid", "kid_mean", "precision", "recall")


def run(command: list[str], cpu: int | None) -> None:
    threads = {"OMP_NUM_THREADS": "1"} if cpu is not None else {}
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    finished = subprocess.run(command, cwd=REPO, env={**os.environ, **threads}, preexec_fn=pin,
                              capture_output=True, text=True)
    if finished.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{finished.stderr[-3000:]}")


def train_and_score(model: str, seed: int, budget: str, out: Path, cpu: int | None) -> dict:
    run_dir = out / f"{model}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    train = ["-m", "genexp", f"model={model}", "data=digits", f"seed={seed}", f"+trainer.max_time={budget}",
             "trainer.max_epochs=-1", "trainer.enable_progress_bar=false"]
    started = time.perf_counter()
    run([sys.executable, *train, f"hydra.run.dir={run_dir}"], cpu)
    wall = time.perf_counter() - started
    run([sys.executable, "-m", "genexp.evaluate", f"run={run_dir}", "feature_extractor=classifier", "n_fake=1000",
         f"seed={seed}"], cpu)
    record = json.loads((run_dir / "eval.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    return {"model": model, "seed": seed, "command": "python " + " ".join(train), "wall_s": round(wall, 1),
            "epochs": trained["epochs"], "steps": trained["global_step"],
            **{k: record["sample_quality"]["scores"][k] for k in SCORES},
            "extractor": record["sample_quality"]["provenance"]}


def table(rows: list[dict], budget: str) -> str:
    lines = [f"Digits (16 px), training budget {budget} of wall-clock time per run, "
             f"{len({r['seed'] for r in rows})} seeds; 1,000 samples against the test split under the digits "
             f"classifier's features (`python -m genexp.evaluate ... feature_extractor=classifier n_fake=1000`). "
             f"Mean (min-max) over seeds.", "",
             "| model | FID | KID | precision | recall | epochs | steps |", "|---|---:|---:|---:|---:|---:|---:|"]
    for model in MODELS:
        mine = [r for r in rows if r["model"] == model]

        def cell(key: str, digits: int = 3) -> str:
            values = [r[key] for r in mine]
            return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

        lines.append(f"| {model} | {cell('fid', 2)} | {cell('kid_mean', 4)} | {cell('precision')} | {cell('recall')} "
                     f"| {cell('epochs', 0)} | {cell('steps', 0)} |")
    lines += ["", "Commands (each followed by `python -m genexp.evaluate run=<its dir> feature_extractor=classifier "
              "n_fake=1000 seed=<seed>`):", ""] + [f"- `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="00:00:04:00", help="trainer.max_time of every run (DD:HH:MM:SS)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cpu", type=int, default=None, help="pin every run to this core, one thread")
    parser.add_argument("--runs", type=Path, default=REPO / "outputs" / "diffusion_vs_gan")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "diffusion_vs_gan")
    args = parser.parse_args()
    import torch

    rows = [train_and_score(model, seed, args.budget, args.runs, args.cpu) for seed in args.seeds for model in MODELS]
    cores = f"one core of {os.cpu_count()}, one thread" if args.cpu is not None else f"{os.cpu_count()} cores"
    machine = f"{platform.processor() or platform.machine()}, {cores}, torch {torch.__version__}"
    text = table(rows, args.budget) + f"\n{date.today().isoformat()}, {machine}.\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"budget": args.budget, "rows": rows, "machine": machine,
                                                         "date": date.today().isoformat()}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
