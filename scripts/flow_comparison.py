"""genexp's flows beside zuko's (Rozet et al., zuko 1.x) on the 2D toy sets, trained on identical arrays.

    python scripts/flow_comparison.py [--quick] [--sets moons ...] [--seeds 0 1 2] [--epochs 20] [--jobs 2]
                                      [--out docs/flow_comparison.md] [--work outputs/flow_comparison] [--render]

For each set and seed, the train and test points come from genexp's own toy2d data module
(`data=<set> data.seed=<seed>`, the data configs' sizes). genexp's RealNVP, MAF and NSF train
through genexp's own path: `genexp.train.run` on the composed config (what `python -m genexp`
runs; `logger=none callbacks=none`, so no views are drawn), with a Lightning Trainer, validation
each epoch, and the test on the last epoch's weights. zuko's RealNVP, MAF and NSF train in a plain
PyTorch loop on the same arrays, with the same batch size, epochs and Adam settings (from the
composed optimizer config), and are tested on their last weights too. zuko's flows mirror genexp's
default sizes (RealNVP 16 couplings, MAF 10 layers, MLPs [128, 128]); zuko's NSF is 5 transforms of
8 bins with [128, 128] conditioners.

The score is the test NLL's gap to the oracle: the data module's true log density on the same test
points gives the entropy of p_data, the best NLL any model can reach. Writes a markdown table
(--out) and a JSON file beside it; prints the table. --quick (1 seed, 2 epochs, moons, 2048 training
points) checks the script end to end in seconds; --render writes the markdown again from the JSON
file (the table's layout, without training).
"""

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETS = ("moons", "checkerboard", "eight_gaussians")
MODELS = ("realnvp", "maf", "nsf")
ZUKO = {  # name -> (zuko class, keyword arguments)
    "realnvp": ("RealNVP", {"transforms": 16, "hidden_features": [128, 128]}),
    "maf": ("MAF", {"transforms": 10, "hidden_features": [128, 128]}),
    "nsf": ("NSF", {"transforms": 5, "bins": 8, "hidden_features": [128, 128]}),
}
QUICK_DATA = ["data.n_train=2048", "data.n_val=256", "data.n_test=1024"]


def compose(overrides: list[str], output_dir: Path):
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import open_dict

    from genexp.config_dir import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def overrides(model: str, data: str, seed: int, epochs: int, extra: list[str]) -> list[str]:
    return [f"model={model}", f"data={data}", f"seed={seed}", f"data.seed={seed}", f"trainer.max_epochs={epochs}",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=none", "callbacks=none", *extra]


def arrays(cfg):
    """The train and test points of the config's data module, and the oracle NLL on the test points."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    train, test = datamodule.splits["train"].tensors[0], datamodule.splits["test"].tensors[0]
    return train, test, -datamodule.log_prob(test).mean().item()


def n_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def train_genexp(model: str, data: str, seed: int, epochs: int, extra: list[str], work: Path) -> dict:
    import contextlib
    import io

    from genexp.train import instantiate_data_and_model, run

    run_dir = work / f"{data}-genexp-{model}-seed{seed}"
    cfg = compose(overrides(model, data, seed, epochs, extra), run_dir)
    _, test, oracle = arrays(cfg)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the run's opening and closing lines
        run(cfg)
    wall = time.perf_counter() - started
    record = json.loads((run_dir / "metrics.json").read_text())
    params = n_parameters(instantiate_data_and_model(cfg)[1])
    return {"test_nll": record["metrics"]["test/nll"], "oracle_nll": oracle, "params": params, "wall_s": wall,
            "epochs": record["epochs"]}  # Lightning counts the finished epochs


def train_zuko(model: str, data: str, seed: int, epochs: int, extra: list[str], work: Path) -> dict:
    import torch
    import zuko

    cfg = compose(overrides(model, data, seed, epochs, extra), work / "unused")
    train, test, oracle = arrays(cfg)
    torch.manual_seed(seed)
    name, kwargs = ZUKO[model]
    flow = getattr(zuko.flows, name)(2, **kwargs)
    optimizer = torch.optim.Adam(flow.parameters(), lr=cfg.optimizer.lr, betas=tuple(cfg.optimizer.betas),
                                 weight_decay=cfg.optimizer.weight_decay)
    batches = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        for index in torch.randperm(len(train), generator=batches).split(cfg.data.batch_size):
            loss = -flow().log_prob(train[index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        test_nll = -torch.cat([flow().log_prob(x) for x in test.split(cfg.data.batch_size)]).mean().item()
    return {"test_nll": test_nll, "oracle_nll": oracle, "params": n_parameters(flow),
            "wall_s": time.perf_counter() - started, "epochs": epochs}


def job(library: str, model: str, data: str, seed: int, epochs: int, extra: list[str], work: str) -> dict:
    import torch

    torch.set_num_threads(1)  # the jobs share the machine's cores
    train = train_genexp if library == "genexp" else train_zuko
    result = train(model, data, seed, epochs, extra, Path(work))
    result |= {"library": library, "model": model, "data": data, "seed": seed,
               "nll_gap": result["test_nll"] - result["oracle_nll"]}
    print(f"{data:16s} {library:6s} {model:8s} seed {seed}: gap {result['nll_gap']:.4f}  "
          f"{result['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return result


def data_fingerprints(sets, seeds, extra, work: Path) -> dict:
    """A hash of each set's train and test arrays: what both libraries were given."""
    out = {}
    for data in sets:
        for seed in seeds:
            train, test, _ = arrays(compose(overrides("nsf", data, seed, 1, extra), work / "unused"))
            digest = hashlib.sha1(train.numpy().tobytes() + test.numpy().tobytes()).hexdigest()[:12]
            out[f"{data}/seed{seed}"] = {"n_train": len(train), "n_test": len(test), "sha1": digest}
    return out


def summarise(results: list[dict], sets, seeds) -> list[dict]:
    rows = []
    for data in sets:
        for library in ("genexp", "zuko"):
            for model in MODELS:
                runs = [r for r in results if (r["data"], r["library"], r["model"]) == (data, library, model)]
                gaps = [r["nll_gap"] for r in runs]
                rows.append({"data": data, "library": library, "model": model, "params": runs[0]["params"],
                             "seeds": len(runs), "gap_min": min(gaps), "gap_max": max(gaps),
                             "gap_mean": sum(gaps) / len(gaps), "oracle_nll": runs[0]["oracle_nll"],
                             "wall_s_mean": sum(r["wall_s"] for r in runs) / len(runs)})
    return rows


def verdicts(rows: list[dict], results: list[dict], sets) -> list[str]:
    lines = []
    for data in sets:
        ours, theirs = (next(r for r in rows if (r["data"], r["library"], r["model"]) == (data, lib, "nsf"))
                        for lib in ("genexp", "zuko"))
        gaps = {(r["library"], r["seed"]): r["nll_gap"] for r in results if (r["data"], r["model"]) == (data, "nsf")}
        seeds = sorted({seed for _, seed in gaps})
        wins = sum(gaps["genexp", seed] < gaps["zuko", seed] for seed in seeds)
        if ours["gap_max"] < theirs["gap_min"]:
            word = "smaller on every seed than"
        elif ours["gap_mean"] < theirs["gap_mean"]:
            word = "smaller on average (the ranges overlap) than"
        else:
            word = "NOT smaller than"
        lines.append(f"- {data}: genexp NSF gap {ours['gap_mean']:.4f} (mean) is {word} zuko NSF's "
                     f"{theirs['gap_mean']:.4f}; smaller on {wins} of {len(seeds)} seeds (same data, seed by seed); "
                     f"parameters {ours['params']:,} vs {theirs['params']:,}.")
    return lines


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        "# genexp flows beside zuko's on the 2D toy sets",
        "",
        "Written by `scripts/flow_comparison.py`; do not edit by hand. Regenerate with:",
        "",
        f"    {report['command']}",
        "",
        f"- date: {report['date']}; machine: {report['machine']}",
        f"- torch {report['versions']['torch']}, lightning {report['versions']['lightning']}, "
        f"zuko {report['versions']['zuko']}",
        f"- {s['epochs']} epochs, batch size {s['batch_size']}, Adam lr {s['lr']} betas {s['betas']} weight decay "
        f"{s['weight_decay']}, seeds {s['seeds']} (the seed draws the data and initialises the weights)",
        f"- data: genexp's toy2d module, {s['n_train']} training and {s['n_test']} test points per set and seed; "
        "both libraries train on the same arrays (sha1 of each in the JSON file)",
        "- genexp: `genexp.train.run` on the composed config (the path of `python -m genexp`) with "
        "`logger=none callbacks=none`: a Lightning Trainer, validation every epoch, test on the last weights; "
        "its wall time includes validation and checkpoint writes",
        "- zuko: a plain PyTorch loop, test on the last weights; wall time of training and test",
        "- gap: test NLL minus the oracle NLL (entropy of p_data, the data module's log density on the same "
        "test points), nats; min-max and mean over the seeds. Lower is better, 0 is perfect.",
        "",
        "| data | library | model | parameters | gap min – max | gap mean | oracle NLL | wall s (mean) |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['data']} | {r['library']} | {r['model']} | {r['params']:,} | "
                     f"{r['gap_min']:.4f} – {r['gap_max']:.4f} | {r['gap_mean']:.4f} | {r['oracle_nll']:.4f} | "
                     f"{r['wall_s_mean']:.1f} |")
    lines += ["", "NSF, genexp against zuko at equal epochs:", "", *report["verdicts"], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, moons, 2048 training points")
    parser.add_argument("--sets", nargs="+", choices=SETS)
    parser.add_argument("--seeds", nargs="+", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--jobs", type=int, default=1, help="trainings at once, one core each")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "flow_comparison.md")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "flow_comparison", help="genexp's run dirs")
    parser.add_argument("--render", action="store_true",
                        help="no training: write the markdown (--out) again from the JSON file beside it")
    args = parser.parse_args()
    if args.render:
        report = json.loads(args.out.with_suffix(".json").read_text())
        sets = list(dict.fromkeys(r["data"] for r in report["runs"]))
        report["verdicts"] = verdicts(report["rows"], report["runs"], sets)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.out.write_text(markdown(report))
        print(markdown(report))
        return
    sets = args.sets or (["moons"] if args.quick else list(SETS))
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    epochs = args.epochs or (2 if args.quick else 20)
    extra = QUICK_DATA if args.quick else []
    work = args.work / datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    work.mkdir(parents=True)

    import lightning
    import torch
    import zuko

    jobs = [(library, model, data, seed, epochs, extra, str(work))
            for data in sets for seed in seeds for library in ("genexp", "zuko") for model in MODELS]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = list(pool.map(job, *zip(*jobs)))
    else:
        results = [job(*j) for j in jobs]
    bad = [r for r in results if not math.isfinite(r["nll_gap"])]
    cfg = compose(overrides("nsf", sets[0], seeds[0], epochs, extra), work / "unused")
    rows = summarise(results, sets, seeds)
    report = {
        "command": "python scripts/flow_comparison.py " + shlex.join(sys.argv[1:]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
                   f"{platform.system()} {platform.release()}, {args.jobs} training(s) at once, 1 thread each",
        "versions": {"torch": torch.__version__, "lightning": lightning.__version__, "zuko": zuko.__version__,
                     "python": platform.python_version()},
        "settings": {"epochs": epochs, "batch_size": cfg.data.batch_size, "lr": cfg.optimizer.lr,
                     "betas": list(cfg.optimizer.betas), "weight_decay": cfg.optimizer.weight_decay, "seeds": seeds,
                     "n_train": cfg.data.n_train, "n_test": cfg.data.n_test, "zuko": ZUKO},
        "data": data_fingerprints(sets, seeds, extra, work),
        "rows": rows,
        "verdicts": verdicts(rows, results, sets),
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(report))
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    if bad:
        sys.exit(f"non-finite gaps: {bad}")


if __name__ == "__main__":
    main()
