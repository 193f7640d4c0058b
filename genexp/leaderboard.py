"""The leaderboard: every family trained for the same wall-clock time and judged by one evaluator.

    python -m genexp.leaderboard [--budget 00:00:01:00] [--budget-2d 00:00:00:12] [--seeds 0 1 2]
                                 [--lanes 2] [--quick] [--runs outputs/leaderboard] [--out docs/leaderboard]

Images (digits, 16 px): each image model trains for `--budget` of wall-clock time per seed
(`trainer.max_time`, no epoch limit); `python -m genexp.evaluate` then scores 1,000 samples against
the test split under the digits classifier's features (FID, KID, precision, recall) and recomputes
the test metrics, among them bits/dim where the family has one (exact for flows and PixelCNN, a bound
for the VAE and diffusion). 2D: every density model on each of the seven toy sets for `--budget-2d`,
judged by the test NLL's gap to the oracle entropy of p_data (a bound's gap for diffusion).

Every run is a plain `python -m genexp ...` subprocess pinned to one core with one thread, and
`--lanes` of them run at once, one per core: every run gets the same compute. The results: <out>.md
(the tables, mean +- std over seeds, and their provenance), <out>.csv (one row per run) and
<out>_samples.png (a grid of samples per image model, from its best seed).

A module of the package, not a script of the repository: an installed genexp has it, and a user with
a GPU runs the same command with a larger `--budget` (and `--runs` elsewhere).
`--quick` (one seed, seconds per run, two of the toy sets) checks that every row and column fills in.
"""

import argparse
import csv
import json
import math
import os
import queue
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

# Each model runs its own config (conf/model/<name>.yaml) on the shared data, with no other overrides.
IMAGE_MODELS = ("vae", "beta_vae", "dcgan", "wgan_gp", "pixelcnn", "realnvp", "nsf", "ddpm", "ebm")
DENSITY_MODELS = ("gaussian", "gmm", "realnvp", "maf", "nsf", "ebm_2d", "ddpm_2d")
TOY_SETS = ("moons", "circles", "eight_gaussians", "checkerboard", "pinwheel", "swiss_roll", "two_spirals")
QUICK_TOY_SETS = ("moons", "checkerboard")
# The test metric that is each family's bits/dim, and what kind of figure it is (first present wins).
BITS_PER_DIM = (("test/bits_per_dim", "exact"), ("test/nll_iwae_bits_per_dim", "IWAE bound"),
                ("test/neg_elbo_bits_per_dim", "ELBO bound"), ("test/bits_per_dim_bound", "variational bound"))
GAPS = ("test/nll_gap", "test/nll_bound_gap")  # exact NLL's gap; diffusion's bound's gap
SCORES = ("fid", "kid_mean", "precision", "recall")
COMMON = ["trainer.max_epochs=-1", "trainer.enable_progress_bar=false"]
# --quick: the test stage on two batches (evaluate recomputes it the same way), 200 samples scored.
QUICK = {"budget": "00:00:00:04", "budget_2d": "00:00:00:02", "seeds": [0], "n_fake": 200,
         "overrides": ["trainer.limit_test_batches=2", "trainer.limit_val_batches=2"]}


@dataclass
class Job:
    table: str  # images | 2d
    model: str
    data: str
    seed: int
    run_dir: Path
    train: list[str]  # the arguments after `python -m genexp`
    n_fake: int
    result: dict = field(default_factory=dict)

    @property
    def command(self) -> str:
        return "python -m genexp " + " ".join(self.train)


def plan(args: argparse.Namespace) -> list[Job]:
    toy_sets = QUICK_TOY_SETS if args.quick else TOY_SETS
    extra = QUICK["overrides"] if args.quick else []
    jobs = []
    for seed in args.seeds:
        for model in IMAGE_MODELS:
            run_dir = args.runs / "images" / model / f"seed{seed}"
            # test=false: genexp.evaluate runs the test split on the trained weights, with the samples.
            train = [f"model={model}", "data=digits", f"seed={seed}", f"+trainer.max_time={args.budget}", "test=false",
                     *COMMON, *extra]
            jobs.append(Job("images", model, "digits", seed, run_dir, train, args.n_fake))
        for model in DENSITY_MODELS:
            for data in toy_sets:
                run_dir = args.runs / "2d" / model / data / f"seed{seed}"
                train = [f"model={model}", f"data={data}", f"seed={seed}", f"+trainer.max_time={args.budget_2d}",
                         *COMMON, *extra]
                jobs.append(Job("2d", model, data, seed, run_dir, train, args.n_fake))
    return jobs


def run_pinned(command: list[str], cores: "queue.Queue[int]", log: Path) -> None:
    """Run `command` on a free core, with one thread; its output goes to `log`."""
    core = cores.get()
    try:
        with log.open("w") as out:
            finished = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                      env={**os.environ, "OMP_NUM_THREADS": "1"},
                                      preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    finally:
        cores.put(core)
    if finished.returncode != 0:
        raise RuntimeError(f"`{' '.join(command[1:])}` failed (exit {finished.returncode}); see {log}")


def train_and_score(job: Job, cores: "queue.Queue[int]") -> Job:
    """Train the job's run (kept if it completed earlier: --resume) and score it."""
    metrics_file = job.run_dir / "metrics.json"
    if not (metrics_file.is_file() and json.loads(metrics_file.read_text()).get("status") == "completed"):
        job.run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_pinned([sys.executable, "-m", "genexp", *job.train, f"hydra.run.dir={job.run_dir}"], cores,
                   job.run_dir.with_name(job.run_dir.name + ".train.log"))
    trained = json.loads(metrics_file.read_text())
    job.result = {"epochs": trained["epochs"], "steps": trained["global_step"]}
    if job.table == "2d":
        metrics = trained["metrics"]
        gap = next((name for name in GAPS if name in metrics), None)
        job.result |= {"gap": metrics[gap] if gap else math.nan, "gap_kind": gap or "none"}
        return job
    eval_file = job.run_dir / "eval.json"
    if not eval_file.is_file():
        run_pinned([sys.executable, "-m", "genexp.evaluate", f"run={job.run_dir}", "feature_extractor=classifier",
                    f"n_fake={job.n_fake}", f"seed={job.seed}"], cores,
                   job.run_dir.with_name(job.run_dir.name + ".eval.log"))
    record = json.loads(eval_file.read_text())
    quality = record["sample_quality"]
    job.result |= {name: quality["scores"][name] for name in SCORES}
    job.result["provenance"] = quality["provenance"]
    job.result["sample_grid"] = record["sample_grid"]
    from genexp.saved_run import SavedRun

    saved = SavedRun.open(job.run_dir)
    found = next(((name, kind) for name, kind in BITS_PER_DIM if name in record["metrics"]), None)
    kind = found[1] if found else "no likelihood"
    if saved.cfg.model.get("likelihood") == "bernoulli":
        # Cross-entropy against grey levels, not a probability of 8-bit pixel values.
        kind += "; Bernoulli, not comparable"
    job.result |= {"bits_per_dim": record["metrics"][found[0]] if found else None, "bits_per_dim_kind": kind}
    _, model = saved.build()
    # Parameters the optimizer trains (weight averages and buffers left out).
    job.result["parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return job


def seconds(budget: str) -> int:
    days, hours, minutes, secs = (int(part) for part in budget.split(":"))
    return ((days * 24 + hours) * 60 + minutes) * 60 + secs


def mean_std(values: list[float], digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def image_table(jobs: list[Job], budget: str) -> list[str]:
    lines = ["| model | FID | KID (x1000) | precision | recall | bits/dim | parameters | epochs | s/epoch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model in IMAGE_MODELS:
        runs = [j.result for j in jobs if j.table == "images" and j.model == model]
        kind = runs[0]["bits_per_dim_kind"]
        bpd = mean_std([r["bits_per_dim"] for r in runs], 3)
        epochs = [r["epochs"] for r in runs]
        per_epoch = [seconds(budget) / e for e in epochs if e] or [None]
        lines.append(f"| {model} | {mean_std([r['fid'] for r in runs], 2)} | {mean_std([r['kid_mean'] for r in runs], 2)} "
                     f"| {mean_std([r['precision'] for r in runs], 3)} | {mean_std([r['recall'] for r in runs], 3)} "
                     f"| {bpd} ({kind}) "
                     f"| {runs[0]['parameters']:,} | {mean_std(epochs, 1)} | {mean_std(per_epoch, 2)} |")
    return lines


def density_table(jobs: list[Job], toy_sets: tuple[str, ...]) -> list[str]:
    lines = ["| model | " + " | ".join(toy_sets) + " |", "|---|" + "---:|" * len(toy_sets)]
    for model in DENSITY_MODELS:
        cells = []
        for data in toy_sets:
            runs = [j.result for j in jobs if j.table == "2d" and j.model == model and j.data == data]
            bound = " (bound)" if runs[0]["gap_kind"] == "test/nll_bound_gap" else ""
            cells.append(mean_std([r["gap"] for r in runs], 3) + bound)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def commit() -> str:
    """The checked-out commit, marked `+changes` where tracked files differ from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" +changes" if dirty.stdout.strip() else "")


def machine() -> str:
    from genexp.report import cpu_name

    return f"{cpu_name()}, {os.cpu_count()} cores"


def provenance(jobs: list[Job], table: str, args: argparse.Namespace, wall_s: float) -> list[str]:
    import lightning
    import torch

    mine = [j for j in jobs if j.table == table]
    lines = ["", f"- commit: `{commit()}`; {date.today().isoformat()}; {machine()}, each run on one core with one "
                 f"thread, {args.lanes} at once; torch {torch.__version__}, Lightning {lightning.__version__}; "
                 f"seeds {', '.join(map(str, args.seeds))}; the whole leaderboard took {wall_s / 60:.1f} min"]
    if table == "images":
        extractor = mine[0].result["provenance"]
        lines.append(f"- features: the digits classifier (`feature_extractor=classifier`, weights sha256 "
                     f"{extractor['weights_sha256']}), {extractor['n_fake']} samples against the {extractor['n_real']} "
                     f"test images; each run scored by `python -m genexp.evaluate run=<run dir> "
                     f"feature_extractor=classifier n_fake={args.n_fake} seed=<seed>`")
    lines.append("- commands (`<seed>`: each of the seeds, `<set>`: each toy set; `hydra.run.dir=` beside them names "
                 "the run directory):")
    seen = []
    for job in mine:
        command = job.command.replace(f"seed={job.seed}", "seed=<seed>")
        if table == "2d":
            command = command.replace(f"data={job.data}", "data=<set>")
        if command not in seen:
            seen.append(command)
    return lines + [f"  - `{c}`" for c in seen]


def samples_figure(jobs: list[Job], path: Path) -> None:
    """The best seed's (lowest FID) evaluation grid of every image model, side by side, labelled."""
    from PIL import Image, ImageDraw

    grids = []
    for model in IMAGE_MODELS:
        runs = [j for j in jobs if j.table == "images" and j.model == model]
        best = min(runs, key=lambda j: j.result["fid"])
        grids.append((f"{model} (seed {best.seed})", Image.open(best.result["sample_grid"]).convert("RGB")))
    width, height, label, per_row = max(g.width for _, g in grids), max(g.height for _, g in grids), 18, 5
    rows = math.ceil(len(grids) / per_row)
    figure = Image.new("RGB", (min(len(grids), per_row) * (width + 8), rows * (height + label)), "white")
    draw = ImageDraw.Draw(figure)
    for i, (name, grid) in enumerate(grids):
        x, y = (i % per_row) * (width + 8), (i // per_row) * (height + label)
        figure.paste(grid, (x, y + label))
        draw.text((x + 2, y + 2), name, fill="black")
    figure.save(path)


def write_csv(jobs: list[Job], path: Path) -> None:
    keys = ["table", "model", "data", "seed", "epochs", "steps", *SCORES, "bits_per_dim", "bits_per_dim_kind",
            "parameters", "gap", "gap_kind", "command"]
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, keys, extrasaction="ignore")
        writer.writeheader()
        for job in jobs:
            writer.writerow({"table": job.table, "model": job.model, "data": job.data, "seed": job.seed,
                             "command": job.command + f" hydra.run.dir={job.run_dir}", **job.result})


def check_complete(jobs: list[Job]) -> None:
    """Every figure a table shows is a number: a NaN or a missing score is an error, not a cell."""
    for job in jobs:
        wanted = ["gap"] if job.table == "2d" else [*SCORES, "parameters", "epochs"]
        bad = [k for k in wanted if job.result.get(k) is None or not math.isfinite(job.result[k])]
        if bad:
            raise RuntimeError(f"{job.model} on {job.data}, seed {job.seed}: {', '.join(bad)} missing or not finite "
                               f"({job.run_dir})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genexp.leaderboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="00:00:01:00", help="wall-clock training time of each image run (DD:HH:MM:SS)")
    parser.add_argument("--budget-2d", default="00:00:00:12", help="of each 2D run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lanes", type=int, default=len(os.sched_getaffinity(0)),
                        help="runs at once, each pinned to a core of its own (default: every core)")
    parser.add_argument("--n-fake", type=int, default=1000, help="samples scored per image run")
    parser.add_argument("--quick", action="store_true", help="one seed, seconds per run, two toy sets")
    parser.add_argument("--resume", action="store_true", help="keep the completed runs found under --runs")
    parser.add_argument("--runs", type=Path, default=Path("outputs/leaderboard"))
    parser.add_argument("--out", type=Path, default=Path("docs/leaderboard"))
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.budget_2d, args.seeds, args.n_fake = (QUICK["budget"], QUICK["budget_2d"], QUICK["seeds"],
                                                               QUICK["n_fake"])
    for name, budget in (("--budget", args.budget), ("--budget-2d", args.budget_2d)):
        if len(budget.split(":")) != 4 or not all(p.isdigit() for p in budget.split(":")) or seconds(budget) == 0:
            parser.error(f"{name}={budget!r}: give a positive DD:HH:MM:SS, e.g. 00:00:01:00")
    cores = sorted(os.sched_getaffinity(0))
    if not 1 <= args.lanes <= len(cores):
        parser.error(f"--lanes={args.lanes}: between 1 and the {len(cores)} cores this process may use")
    if args.runs.exists() and any(args.runs.iterdir()) and not args.resume:
        parser.error(f"--runs={args.runs} already holds runs: pass --resume to keep its completed runs, "
                     f"or choose another directory")

    started = time.perf_counter()
    free = queue.Queue()
    for core in cores[:args.lanes]:
        free.put(core)
    jobs = plan(args)
    with ThreadPoolExecutor(args.lanes) as pool:
        finished = list(pool.map(lambda job: train_and_score(job, free), jobs))
    check_complete(finished)
    wall_s = time.perf_counter() - started

    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure = args.out.with_name(args.out.name + "_samples.png")
    samples_figure(finished, figure)
    toy_sets = QUICK_TOY_SETS if args.quick else TOY_SETS
    text = ["# Leaderboard", "",
            f"Every family on one footing: the same data, the same wall-clock training budget per run, the same "
            f"evaluator; mean ± std over {len(args.seeds)} seed(s). Written by `python -m genexp.leaderboard"
            f"{' --quick' if args.quick else ''}`; docs/leaderboard_guide.md says how to add a model.", "",
            f"## Images: digits (16 px), {args.budget} of training per run", "",
            *image_table(finished, args.budget), "",
            "FID, KID, precision and recall under the digits classifier's features (lower FID and KID are better, "
            "higher precision and recall); bits/dim on the test split, exact or a bound as marked; epochs finished "
            "in the budget and the budget's seconds per epoch.",
            *provenance(finished, "images", args, wall_s), "",
            f"![samples of each model, best seed]({figure.name})", "",
            f"## 2D densities: test NLL minus the oracle entropy of p_data (nats), {args.budget_2d} of training per run",
            "", *density_table(finished, toy_sets), "",
            "0 is a perfect model; diffusion reports its variational bound's gap (an upper bound on the NLL's).",
            *provenance(finished, "2d", args, wall_s), ""]
    args.out.with_suffix(".md").write_text("\n".join(text))
    write_csv(finished, args.out.with_suffix(".csv"))
    print("\n".join(text))
    print(f"written: {args.out.with_suffix('.md')}, {args.out.with_suffix('.csv')}, {figure}")


if __name__ == "__main__":
    main()
