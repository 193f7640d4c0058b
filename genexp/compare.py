"""Compare runs: `python -m genexp.compare <sweep dir or outputs dir> [--sort KEY] [--plot HPARAM]`.

Every directory below the given one that holds a metrics.json is a run. The table has one row
per run: the overrides that differ between runs (from .hydra/overrides.yaml), the status, and
the final metrics. It is printed with rich and written as compare.md and compare.csv; with
--plot a metric is drawn against a swept hyperparameter (compare_<metric>_vs_<hparam>.png).

The printed table fits the terminal and never cuts a key name or a value: when it is too wide
with one-line headers, each header is broken after its '.', '/' and '_' into lines as narrow as
the column's values, and columns that still do not fit go on in further tables, each starting
with the run column.
"""

import argparse
import csv
import fnmatch
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

DEFAULT_METRICS = ["test/*"]  # beside each run's monitored metric


@dataclass
class Run:
    path: Path
    name: str
    overrides: dict[str, str]
    status: str
    metrics: dict[str, float | None]
    monitor: str | None = None
    error: str = ""
    cells: dict[str, object] = field(default_factory=dict)


def find_runs(root: Path) -> list[Run]:
    runs = []
    for metrics_file in sorted(root.rglob("metrics.json")):
        run_dir = metrics_file.parent
        record = json.loads(metrics_file.read_text())
        overrides_file = run_dir / ".hydra" / "overrides.yaml"
        overrides = {}
        for item in OmegaConf.load(overrides_file) if overrides_file.is_file() else []:
            key, _, value = str(item).partition("=")
            overrides[key.lstrip("+~")] = value
        relative = run_dir.relative_to(root)
        # Sweep jobs are named <job number>_<all overrides>: the number is enough in a table.
        job = re.match(r"(\d+)_", relative.name)
        name = str(relative.parent / f"#{job.group(1)}") if job else str(relative)
        runs.append(Run(run_dir, name.removeprefix("./"), overrides, record.get("status", "?"),
                        record.get("metrics", {}), record.get("monitor"), record.get("error", "")))
    return runs


def differing_overrides(runs: list[Run]) -> list[str]:
    """Override keys whose value is not the same in every run (hydra.* settings left out)."""
    keys = sorted({k for run in runs for k in run.overrides if not k.startswith("hydra.")})
    return [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]


def metric_columns(runs: list[Run], patterns: list[str]) -> list[str]:
    names = sorted({k for run in runs for k in run.metrics})
    monitors = sorted({run.monitor for run in runs if run.monitor})
    chosen = monitors + [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    return list(dict.fromkeys(c for c in chosen if c in names))


def as_number(value: object) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def sort_runs(runs: list[Run], key: str, descending: bool) -> list[Run]:
    """By a metric or an override; runs without a value (failed ones) always come last."""
    def order(run: Run) -> tuple:
        value = run.cells.get(key)
        number = as_number(value)
        if number is not None:
            return (0, -number if descending else number, "")
        return (1, 0.0, "" if value is None else str(value))

    return sorted(runs, key=order)


def build_table(runs: list[Run], metric_patterns: list[str]) -> list[str]:
    """Fill each run's cells; returns the column names."""
    hparams = differing_overrides(runs)
    metrics = metric_columns(runs, metric_patterns)
    for run in runs:
        status = run.status if not run.error else f"{run.status}: {run.error.split(':')[0]}"
        run.cells = {"run": run.name, **{k: run.overrides.get(k) for k in hparams}, "status": status,
                     **{k: run.metrics.get(k) for k in metrics}}
    return ["run", *hparams, "status", *metrics]


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def key_pieces(key: str) -> list[str]:
    """A key cut after each '.', '/' and '_': the places where its header may break a line."""
    return re.findall(r"[^./_]*[./_]|[^./_]+$", key)


def broken_key(key: str, width: int) -> str:
    """The key on lines of at most `width` characters (but whole pieces), broken after separators."""
    lines = [""]
    for piece in key_pieces(key):
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


def _table(runs: list[Run], columns: list[str], headers: dict[str, str], title: str | None) -> Table:
    # overflow="fold": a cell wider than its column (a long run name) wraps whole, never "…".
    table = Table(title=title)
    for column in columns:
        table.add_column(headers[column], justify="right" if "/" in column else "left", overflow="fold")
    for run in runs:
        table.add_row(*(_text(run.cells[c]) for c in columns), style="red" if run.status != "completed" else None)
    return table


def _natural_width(console: Console, table: Table) -> int:
    return Measurement.get(console, console.options.update_width(10_000), table).maximum


def tables(runs: list[Run], columns: list[str], title: str, console: Console) -> list[Table]:
    """The table as it fits `console`: one table with one-line headers if it fits, else headers
    broken after separators to the width of the values, over as many tables as the columns need
    (the run column starts each)."""
    whole = _table(runs, columns, {c: c for c in columns}, title)
    if _natural_width(console, whole) <= console.width:
        return [whole]
    headers = {}
    for c in columns:
        widest = max([len(_text(run.cells[c])) for run in runs] + [len(p) for p in key_pieces(c)])
        headers[c] = broken_key(c, widest)
    first, rest = columns[:1], columns[1:]
    groups = [first]
    for column in rest:
        trial = groups[-1] + [column]
        if len(groups[-1]) > len(first) and _natural_width(console, _table(runs, trial, headers, None)) > console.width:
            groups.append(first + [column])
        else:
            groups[-1] = trial
    return [_table(runs, group, headers, title if i == 0 else "(continued)") for i, group in enumerate(groups)]


def print_table(runs: list[Run], columns: list[str], title: str, console: Console | None = None) -> None:
    console = console or Console()
    for table in tables(runs, columns, title, console):
        console.print(table)


def write_markdown(runs: list[Run], columns: list[str], path: Path) -> None:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [row(columns), row(["---"] * len(columns))]
    lines += [row([_text(run.cells[c]) for c in columns]) for run in runs]
    path.write_text("\n".join(lines) + "\n")


def write_csv(runs: list[Run], columns: list[str], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, "path"])
        for run in runs:
            writer.writerow([*("" if run.cells[c] is None else run.cells[c] for c in columns), run.path])


def plot_metric(runs: list[Run], hparam: str, metric: str, path: Path) -> None:
    """The metric against one swept hyperparameter; one line per setting of the other overrides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [k for k in differing_overrides(runs) if k != hparam]
    lines: dict[str, list[tuple[object, float]]] = defaultdict(list)
    for run in runs:
        y = as_number(run.metrics.get(metric))
        if y is not None and hparam in run.overrides:
            label = ", ".join(f"{k}={run.overrides.get(k)}" for k in others) or metric
            lines[label].append((run.overrides[hparam], y))
    if not lines:
        raise SystemExit(f"genexp.compare: no completed run has both {hparam} and {metric}")
    xs = [x for points in lines.values() for x, _ in points]
    numeric = all(as_number(x) is not None for x in xs)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in lines.items():
        points.sort(key=lambda p: as_number(p[0]) if numeric else str(p[0]))
        ax.plot([as_number(x) if numeric else str(x) for x, _ in points], [y for _, y in points],
                marker="o", label=label)
    if numeric:
        values = sorted({as_number(x) for x in xs})
        if values[0] > 0 and values[-1] >= 10 * values[0]:
            ax.set_xscale("log")
        ax.set_xticks(values, [f"{v:g}" for v in values], minor=False)
        ax.minorticks_off()
    ax.set_xlabel(hparam)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m genexp.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a sweep directory, or any directory above runs (e.g. outputs)")
    parser.add_argument("--sort", help="a metric or override key to sort by (default: the monitored metric)")
    parser.add_argument("--descending", action="store_true", help="largest first")
    parser.add_argument("--metrics", nargs="+", default=DEFAULT_METRICS,
                        help="metric name patterns to show beside the monitored metric (default: test/*)")
    parser.add_argument("--plot", metavar="HPARAM", help="draw a metric against this swept override key")
    parser.add_argument("--metric", help="the metric of --plot (default: the --sort key, else the monitored metric)")
    parser.add_argument("--out", type=Path, help="where compare.md/.csv/.png go (default: the root directory)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.root.is_dir():
        sys.exit(f"genexp.compare: error: {args.root} is not a directory")
    runs = find_runs(args.root)
    if not runs:
        sys.exit(f"genexp.compare: error: no run (a directory with metrics.json) below {args.root}")
    columns = build_table(runs, args.metrics)
    monitor = next((run.monitor for run in runs if run.monitor), None)
    sort_key = args.sort or monitor
    if sort_key:
        if sort_key not in columns:
            sys.exit(f"genexp.compare: error: --sort {sort_key} is not a column; columns: {', '.join(columns)}")
        runs = sort_runs(runs, sort_key, args.descending)
    out = args.out or args.root
    out.mkdir(parents=True, exist_ok=True)
    print_table(runs, columns, f"{len(runs)} runs in {args.root}")
    write_markdown(runs, columns, out / "compare.md")
    write_csv(runs, columns, out / "compare.csv")
    print(f"wrote {out / 'compare.md'} and {out / 'compare.csv'}")
    if args.plot:
        metric = args.metric or (sort_key if sort_key in {k for run in runs for k in run.metrics} else monitor)
        png = out / f"compare_{metric.replace('/', '_')}_vs_{args.plot}.png"
        plot_metric(runs, args.plot, metric, png)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
