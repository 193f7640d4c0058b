"""Quality bars of the maximum-likelihood models, each a plain `python -m genexp` run on the CPU.

    python scripts/density_quality.py [--out outputs/density_quality] [--only NAME ...] [--figures docs/figures]

Prints one JSON object and writes it to <out>/quality.json: per run the command, the test NLL,
the oracle NLL (entropy of p_data, Monte Carlo on the test split) and their gap, bits/dim for
images, the wall time, and the final figure (density heat-maps for 2D data, samples for
images). Bars: gmm on eight_gaussians within 0.05 nats of the oracle; the others are
judged by their figures (and their gap, reported).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOW_SCHEDULE = ["lr_scheduler=cosine", "trainer.max_epochs=100"]

RUNS = {
    "gmm_eight_gaussians": {"overrides": ["model=gmm", "data=eight_gaussians"], "max_gap": 0.05},
    # Gradient descent alone, from means at 8 random data points: a local optimum.
    "gmm_eight_gaussians_no_em": {"overrides": ["model=gmm", "data=eight_gaussians", "model.density.fit=gradient",
                                              "model.density.em_init=false"]},
    "realnvp_checkerboard": {"overrides": ["model=realnvp", "data=checkerboard", *FLOW_SCHEDULE]},
    "maf_checkerboard": {"overrides": ["model=maf", "data=checkerboard", *FLOW_SCHEDULE]},
    "realnvp_moons": {"overrides": ["model=realnvp", "data=moons", *FLOW_SCHEDULE]},
    "maf_moons": {"overrides": ["model=maf", "data=moons", *FLOW_SCHEDULE]},
    # The digits' native 8x8 with their own 17 grey levels (k * 255 / 16, k = 0..16).
    "pixelcnn_digits": {"overrides": ["model=pixelcnn", "data=digits", "data.image_size=8",
                                      "model.density.levels=17", "lr_scheduler=cosine", "trainer.max_epochs=40"]},
    # Continuous densities on the same digits, dequantised: bits/dim in the same units.
    "gaussian_digits": {"overrides": ["model=gaussian", "data=digits", "data.image_size=8"]},
    "realnvp_digits": {"overrides": ["model=realnvp", "data=digits", "data.image_size=8"]},
    # The VAE's importance-weighted bound on the same test digits, for comparison.
    "vae_digits": {"overrides": ["model=vae", "data=digits", "data.image_size=8"]},
}


def run(name: str, spec: dict, out: Path) -> dict:
    run_dir = out / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    command = [sys.executable, "-m", "genexp", *spec["overrides"], f"hydra.run.dir={run_dir}",
               "print_config=false", "trainer.enable_progress_bar=false"]
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    result = {"command": "python -m genexp " + " ".join(spec["overrides"]),
              "wall_time_s": round(time.perf_counter() - started, 1)}
    if finished.returncode != 0:
        return result | {"error": finished.stderr[-2000:]}
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    keys = {"test/nll": "test_nll", "test/oracle_nll": "oracle_nll", "test/nll_gap": "nll_gap",
            "test/bits_per_dim": "bits_per_dim", "test/nll_iwae": "test_nll_iwae",
            "test/nll_iwae_bits_per_dim": "iwae_bits_per_dim"}
    result |= {short: metrics[key] for key, short in keys.items() if key in metrics}
    figure = run_dir / "density" / "final.png"
    result["figure"] = str(figure if figure.is_file() else run_dir / "samples" / "final.png")
    if "max_gap" in spec:
        result["bar"] = f"nll_gap < {spec['max_gap']}"
        result["passed"] = result.get("nll_gap", float("inf")) < spec["max_gap"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "density_quality")
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS), help="run these only")
    parser.add_argument("--figures", type=Path, help="also copy each final figure here as <name>.png")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / "quality.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    for name in args.only or RUNS:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        report[name] = run(name, RUNS[name], args.out)
        if args.figures and Path(report[name].get("figure", "")).is_file():
            args.figures.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(report[name]["figure"], args.figures / f"{name}.png")
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
