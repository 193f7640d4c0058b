"""genexp's EM fit of a Gaussian mixture (model=gmm, fit=em: genexp.nets.gmm_em) against scikit-learn's
GaussianMixture, side by side on the same arrays.

For each 2D toy set (genexp.data.toy2d: the training and test points of data=<name>, its default seed)
and each seed, both fit K components (the same covariance type, tol, max_iter and reg_covar 1e-6) to
the training points in float64 on the CPU, and are scored by their test NLL (nats per point):
  own start    each library from its own k-means++ and k-means start, drawn with the seed: the fit as a
               run makes it. The two starts differ, and EM from different starts can stop in different
               local optima, so the NLL difference is a spread around zero: reported as a distribution.
  same start   scikit-learn's EM started from genexp's k-means start (weights_init, means_init,
               precisions_init): the same EM steps from the same point, which must agree.
Timings: each fit `repeats` times, the two libraries alternating which runs first; the median.

Figures (entries shaped like scripts/benchmark.py's: genexp, baseline, ratio = genexp / baseline, unit,
target, met):
  gmm_fit_time             seconds of the whole fit (start + EM), own starts, summed over all fits;
                           target ratio <= 3
  gmm_em_time_same_start   seconds of the EM iterations alone from the same start (the same iterations
                           on both sides); target ratio <= 3
  gmm_nll_same_start       mean test NLL; target: every fit within 1e-4 nats of scikit-learn's
  gmm_nll_own_start        mean test NLL; target: the mean difference within 1e-4 nats (met only if EM
                           from either library's starts ends, on average, in equally good optima)

    python scripts/gmm_vs_sklearn.py                          # 7 data sets x 3 seeds, about a minute
    python scripts/gmm_vs_sklearn.py --out outputs/benchmarks/gmm_vs_sklearn.json
"""

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture as SklearnMixture
from threadpoolctl import threadpool_limits

from genexp.data.toy2d import DISTRIBUTIONS, Toy2DDataModule
from genexp.nets.gmm_em import REG_COVAR, e_step, expectation_maximisation, fit_mixture, kmeans_start

NLL_TOLERANCE = 1e-4  # nats
TIME_RATIO_TARGET = 3.0


def entry(genexp: float, baseline: float, unit: str, **extra) -> dict:
    # As scripts/benchmark.py's entry().
    return {"genexp": genexp, "baseline": baseline, "ratio": genexp / baseline, "unit": unit, **extra}


def toy_points(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The training and test points of data=<name> (float64), the same arrays for both libraries."""
    datamodule = Toy2DDataModule(name)
    datamodule.setup()
    return tuple(datamodule.splits[split].tensors[0].double() for split in ("train", "test"))


def timed(fit) -> tuple[float, object]:
    started = time.perf_counter()
    result = fit()
    return time.perf_counter() - started, result


def side_by_side(ours, theirs, repeats: int) -> tuple[float, float, object, object]:
    """Median seconds of both fits over `repeats`, alternating which runs first; their last results."""
    times = {"ours": [], "theirs": []}
    results = {}
    for repeat in range(repeats):
        order = (("ours", ours), ("theirs", theirs)) if repeat % 2 == 0 else (("theirs", theirs), ("ours", ours))
        for name, fit in order:
            seconds, results[name] = timed(fit)
            times[name].append(seconds)
    return statistics.median(times["ours"]), statistics.median(times["theirs"]), results["ours"], results["theirs"]


def compare_one(train: torch.Tensor, test: torch.Tensor, seed: int, n_components: int, covariance: str,
                tol: float, max_iter: int, repeats: int) -> dict:
    train_np, test_np = train.numpy(), test.numpy()
    settings = {"covariance_type": covariance, "tol": tol, "max_iter": max_iter, "reg_covar": REG_COVAR}

    # Own starts: the whole fit, as a run makes it.
    fit_s, sk_fit_s, ours, theirs = side_by_side(
        lambda: fit_mixture(train, n_components, covariance, tol, max_iter, torch.Generator().manual_seed(seed)),
        lambda: SklearnMixture(n_components, random_state=seed, **settings).fit(train_np), repeats)
    own = {"nll": -float(e_step(test, ours.parameters)[0]), "sklearn_nll": -theirs.score(test_np),
           "iterations": len(ours.log_likelihoods) - 1, "sklearn_iterations": theirs.n_iter_,
           "time_s": fit_s, "sklearn_time_s": sk_fit_s}

    # Same start: genexp's k-means start handed to scikit-learn (its own start is then skipped:
    # "random_from_data" draws nothing that the given weights, means and precisions do not replace).
    start = kmeans_start(train, n_components, covariance, torch.Generator().manual_seed(seed))
    precisions = 1.0 / start.covariances if covariance == "diag" else torch.linalg.inv(start.covariances)
    em_s, sk_em_s, ours, theirs = side_by_side(
        lambda: expectation_maximisation(train, start, covariance, tol, max_iter),
        lambda: SklearnMixture(n_components, init_params="random_from_data", weights_init=start.weights.numpy(),
                               means_init=start.means.numpy(), precisions_init=precisions.numpy(),
                               random_state=seed, **settings).fit(train_np), repeats)
    same = {"nll": -float(e_step(test, ours.parameters)[0]), "sklearn_nll": -theirs.score(test_np),
            "iterations": len(ours.log_likelihoods) - 1, "sklearn_iterations": theirs.n_iter_,
            "time_s": em_s, "sklearn_time_s": sk_em_s}
    return {"own_start": own, "same_start": same}


def spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "mean": statistics.fmean(values)}


def gmm_vs_sklearn(datasets=tuple(DISTRIBUTIONS), seeds=(0, 1, 2), n_components: int = 8, covariance: str = "full",
                   tol: float = 1e-3, max_iter: int = 100, repeats: int = 3, threads: int = 1) -> dict:
    """The four figures (see the module's docstring), each with the per-fit rows under `runs`."""
    rows = []
    with threadpool_limits(threads):  # numpy's BLAS for scikit-learn
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for name in datasets:
                train, test = toy_points(name)
                for seed in seeds:
                    rows.append({"data": name, "seed": seed, **compare_one(train, test, seed, n_components,
                                                                           covariance, tol, max_iter, repeats)})
        finally:
            torch.set_num_threads(previous_threads)
    setup = {"n_components": n_components, "covariance": covariance, "tol": tol, "max_iter": max_iter,
             "threads": threads, "repeats": repeats, "fits": len(rows)}

    def time_entry(start: str) -> dict:
        ours = sum(r[start]["time_s"] for r in rows)
        theirs = sum(r[start]["sklearn_time_s"] for r in rows)
        ratios = [r[start]["time_s"] / r[start]["sklearn_time_s"] for r in rows]
        return entry(ours, theirs, "s", target=f"ratio <= {TIME_RATIO_TARGET:g}",
                     met=ours / theirs <= TIME_RATIO_TARGET, per_fit_ratio=spread(ratios), **setup,
                     runs=[{"data": r["data"], "seed": r["seed"], **r[start]} for r in rows])

    def nll_entry(start: str, every_fit: bool) -> dict:
        ours = statistics.fmean(r[start]["nll"] for r in rows)
        theirs = statistics.fmean(r[start]["sklearn_nll"] for r in rows)
        differences = [r[start]["nll"] - r[start]["sklearn_nll"] for r in rows]
        within = sum(abs(d) <= NLL_TOLERANCE for d in differences)
        met = within == len(rows) if every_fit else abs(ours - theirs) <= NLL_TOLERANCE
        target = (f"every abs(difference) <= {NLL_TOLERANCE:g} nats" if every_fit
                  else f"abs(mean difference) <= {NLL_TOLERANCE:g} nats")
        return entry(ours, theirs, "nats", difference=ours - theirs, target=target, met=met,
                     differences=spread(differences), fits_within_tolerance=within, **setup,
                     runs=[{"data": r["data"], "seed": r["seed"], "difference": d, **r[start]}
                           for r, d in zip(rows, differences)])

    return {"gmm_fit_time": time_entry("own_start"), "gmm_em_time_same_start": time_entry("same_start"),
            "gmm_nll_same_start": nll_entry("same_start", every_fit=True),
            "gmm_nll_own_start": nll_entry("own_start", every_fit=False)}


def table(figures: dict) -> str:
    lines = ["| figure | genexp | scikit-learn | ratio | target | met |", "|---|---|---|---|---|---|"]
    for name, f in figures.items():
        lines.append(f"| {name} | {f['genexp']:.5g} {f['unit']} | {f['baseline']:.5g} {f['unit']} | "
                     f"{f['ratio']:.3f} | {f['target']} | {'yes' if f['met'] else 'NO'} |")
    lines += ["", "| data | seed | own start: NLL difference | iterations (genexp / sklearn) | time ratio "
                  "| same start: NLL difference | EM time ratio |", "|---|---|---|---|---|---|---|"]
    own, same = figures["gmm_nll_own_start"]["runs"], figures["gmm_nll_same_start"]["runs"]
    for o, s in zip(own, same):
        lines.append(f"| {o['data']} | {o['seed']} | {o['difference']:+.2e} | {o['iterations']} / "
                     f"{o['sklearn_iterations']} | {o['time_s'] / o['sklearn_time_s']:.2f} | {s['difference']:+.1e} | "
                     f"{s['time_s'] / s['sklearn_time_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DISTRIBUTIONS), choices=list(DISTRIBUTIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--covariance", default="full", choices=["full", "diag"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    figures = gmm_vs_sklearn(args.datasets, args.seeds, covariance=args.covariance, repeats=args.repeats)
    print(table(figures))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
                  "torch": torch.__version__, "numpy": np.__version__, "figures": figures}
        args.out.write_text(json.dumps(record, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
