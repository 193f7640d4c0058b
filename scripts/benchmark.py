"""genexp against plain PyTorch, measured side by side in one run.

Figures (each an entry with the genexp value, the baseline value and ratio = genexp / baseline):
  overhead_<model>_<size>  (dcgan, vae at 28 and 64 px; ddpm at 16 and 28 px) training samples/s of genexp's Trainer (genexp.train.make_trainer: the
                           default callbacks and TensorBoard logger; validation, checkpoints and the
                           progress bar off) against a hand-written loop over deep copies of the same
                           networks and optimizers, on the same uint8 tensors and batch size; higher
                           is better, target ratio >= 0.97; `overhead_ms_per_step` is the difference
                           per step, `step_ms` the plain step
  sample_ddim_50           samples/s of DDIM with 50 steps against ancestral DDPM with all 1000 steps,
                           the digits U-Net (model=ddpm); target ratio >= 15, the ideal 20
  data_path_epoch          seconds of a data-only epoch: cached uint8 tensors against torchvision's
                           per-sample path (functions of scripts/data_path_benchmark.py)
  cli_cfg_job              seconds of `python -m genexp --cfg job` against a bare `python -c pass`;
                           `torch_imported` says whether torch was imported on that path
  fid_real_stats           seconds of an FID evaluation with warm (cached) against cold real-data
                           statistics (classifier extractor, genexp.metrics)
  default_run_memory       peak resident memory (MiB) of a child `python -m genexp` default run
                           against a child that only imports torch and lightning; time_s beside it
  default_run_loaded       seconds of the default run (shortened: `loaded_run`) beside as many busy
                           processes as the machine has cores, against the same run on a quiet
                           machine; `default_wait_s` and `quiet_default_wait_s` are the same two runs
                           with OpenMP's own default of spinning waits (`OMP_WAIT_POLICY` empty)
                           instead of genexp's passive waits, and `default_wait_ratio` their ratio

Images are random uint8 files in MNIST's idx format (tests/fake_data.py), resized to 64 px for
the 64 px entries: throughput does not depend on pixel values. Timings: one warm-up epoch, then
`repeats` epochs of each, alternating which of the two runs first (the plain epoch runs before
odd Trainer epochs and after even ones); the median is reported. Each Trainer epoch is timed
from its start to its end, before the other callbacks' end-of-epoch work (image grids): their
per-step work is inside the timing.

    python scripts/benchmark.py --quick --out outputs/benchmarks/quick.json   # about 1 min on 2 CPU cores
    python scripts/benchmark.py --out outputs/benchmarks/full.json            # the configs' networks, FID on 10,000
"""

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from data_path_benchmark import data_epoch_seconds, per_sample_loader, tensor_module  # noqa: E402
from fake_data import write_mnist_format  # noqa: E402  (on the path through data_path_benchmark)
from hydra import compose, initialize_config_dir  # noqa: E402

from genexp.config_dir import config_dir  # noqa: E402
from genexp.metrics.features import ClassifierFeatures  # noqa: E402
from genexp.metrics.sample_quality import draw_images, evaluate_samples  # noqa: E402
from genexp.models.gan import discriminator_loss, generator_loss  # noqa: E402
from genexp.train import instantiate_data_and_model, make_trainer  # noqa: E402

SETTINGS = {  # quick: narrower DCGAN, fewer and shorter epochs; full: the configs' own networks
    "quick": {"batch_size": 128, "batches": 16, "repeats": 4, "gan_width": 16, "fid_n": 1000, "data_images": 5000,
              "sample_n": 16,
              "run": ["trainer.max_epochs=1", "trainer.limit_train_batches=20", "trainer.limit_val_batches=4",
                      "trainer.limit_test_batches=2"],
              "loaded_run": ["trainer.max_epochs=2"]},
    "full": {"batch_size": 128, "batches": 20, "repeats": 6, "gan_width": None, "fid_n": 10000, "sample_n": 64,
             "data_images": 60000, "run": [],  # the default run as it is: 50 epochs
             "loaded_run": ["trainer.max_epochs=10"]},
}


def entry(genexp: float, baseline: float, unit: str, **extra) -> dict:
    return {"genexp": genexp, "baseline": baseline, "ratio": genexp / baseline, "unit": unit, **extra}


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


# --- framework overhead -----------------------------------------------------------------------
def gan_step(model, optimizers):
    """One discriminator and one generator step of the hand-written loop (as GAN.training_step)."""
    opt_g, opt_d = optimizers
    d, latent = model.discriminator, model.latent_dim

    def step(real, labels):
        with torch.no_grad():
            fake = model.generate(torch.randn(len(real), latent), None)
        real_out, fake_out = d(real, None).float(), d(fake, None).float()
        loss = discriminator_loss(model.loss, real_out, fake_out, torch.ones_like(real_out),
                                  torch.zeros_like(fake_out))
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
        d.requires_grad_(False)  # as Lightning's toggled_optimizer: no discriminator gradients
        loss = generator_loss(model.loss, d(model.generate(torch.randn(len(real), latent), None), None).float())
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        d.requires_grad_(True)
        model.generator_ema.update(model.generator)
    return step


def vae_step(model, optimizer):
    def step(x, labels):
        terms = model.terms(x, labels)
        loss = terms["recon"].mean() + model.beta * terms["kl"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def ddpm_step(model, optimizer):
    """One denoising step of the hand-written loop (as Diffusion.training_step and optimizer_step)."""
    def step(x, labels):
        x = model.to_model_space(x)
        t = model.schedule.training_times(len(x))
        loss = model.loss_terms(x, None, t, torch.randn_like(x), model.denoiser).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.denoiser_ema.update(model.denoiser)
    return step


STEPS = {"dcgan": gan_step, "vae": vae_step, "ddpm": ddpm_step}


def overhead(model_name: str, size: int, root: Path, scratch: Path, s: dict) -> dict:
    run_dir = scratch / f"run_{model_name}_{size}"
    overrides = [f"model={model_name}", "data=mnist", f"data.root={root}", f"data.image_size={size}",
                 "data.cache_dir=null", f"data.batch_size={s['batch_size']}", "trainer.accelerator=cpu",
                 f"paths.output_dir={run_dir}", "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0",
                 "trainer.limit_val_batches=0", f"trainer.limit_train_batches={s['batches']}",
                 f"trainer.max_epochs={s['repeats'] + 1}", "callbacks.model_checkpoint=null",
                 "+trainer.enable_checkpointing=false", "+trainer.enable_model_summary=false"]
    if model_name == "dcgan" and s["gan_width"]:
        overrides += [f"model.generator.width={s['gan_width']}", f"model.discriminator.width={s['gan_width']}"]
    cfg = composed(overrides)
    L.seed_everything(0)
    datamodule, model = instantiate_data_and_model(cfg)
    datamodule.setup()
    images, labels = datamodule.splits["train"].tensors
    assert len(images) >= s["batches"] * s["batch_size"], "too few training images for full batches"
    plain = copy.deepcopy(model)
    plain.train()
    step = STEPS[model_name](plain, plain.configure_optimizers())
    n_samples = s["batches"] * s["batch_size"]
    genexp_s, plain_s = [], []

    def plain_epoch() -> float:
        order = torch.randperm(len(images))
        start = time.perf_counter()
        for i in range(s["batches"]):
            index = order[i * s["batch_size"]:(i + 1) * s["batch_size"]]
            x, y = datamodule.on_after_batch_transfer((images[index], labels[index]), 0)
            step(x, y)
        return time.perf_counter() - start

    class Alternate(L.Callback):
        """Times each Trainer epoch's training steps and runs one plain epoch before (odd epochs)
        or after (even) it. First among the callbacks: the others' end-of-epoch work (image grids)
        falls outside the timing, their per-step work inside."""

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch % 2:
                plain_s.append(plain_epoch())
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            genexp_s.append(time.perf_counter() - self.start)
            if trainer.current_epoch % 2 == 0:
                plain_s.append(plain_epoch())

    trainer = make_trainer(cfg, Alternate())
    trainer.fit(model, datamodule=datamodule)
    genexp_rate = n_samples / statistics.median(genexp_s[1:])  # the first epoch of each warms up
    plain_rate = n_samples / statistics.median(plain_s[1:])
    # The difference is a fixed cost per step: the ratio rises towards 1 as steps get longer.
    overhead_ms = 1000 * s["batch_size"] * (1 / genexp_rate - 1 / plain_rate)
    return entry(genexp_rate, plain_rate, "samples/s", overhead_ms_per_step=overhead_ms,
                 step_ms=1000 * s["batch_size"] / plain_rate, batch_size=s["batch_size"], batches=s["batches"],
                 repeats=len(genexp_s) - 1, shape=list(datamodule.shape),
                 callbacks=[type(c).__name__ for c in trainer.callbacks[1:]],
                 loggers=[type(x).__name__ for x in trainer.loggers],
                 nets=describe_nets(cfg))


def describe_nets(cfg) -> str:
    if "generator" in cfg.model:
        return f"widths {cfg.model.generator.width}/{cfg.model.discriminator.width}"
    if "denoiser" in cfg.model:
        return f"U-Net widths {list(cfg.model.denoiser.widths)}"
    return f"{cfg.model.encoder._target_.rsplit('.', 1)[-1]} {list(cfg.model.encoder.hidden_dims)}"


def sampling_speed(steps: int, s: dict) -> dict:
    """Samples/s of DDIM with `steps` steps against ancestral DDPM over all T = 1000 steps: the same
    (untrained) digits U-Net and batch; the cost is one network call per step either way."""
    cfg = composed(["model=ddpm", "data=digits", "trainer.accelerator=cpu"])
    L.seed_everything(0)
    _, model = instantiate_data_and_model(cfg)
    model.eval()
    n = s["sample_n"]

    def rate(sampler: str, n_steps: int) -> float:
        model.sampler = {"name": sampler, "steps": n_steps, "eta": 0.0}
        start = time.perf_counter()
        with torch.no_grad():
            model.sample(n, generator=torch.Generator().manual_seed(0))
        return n / (time.perf_counter() - start)

    rate("ddim", 2)  # warm-up
    ddim, ddpm = rate("ddim", steps), rate("ddpm", model.schedule.steps)
    return entry(ddim, ddpm, "samples/s", target_ratio=15.0, ideal_ratio=model.schedule.steps / steps,
                 baseline_sampler=f"ddpm, {model.schedule.steps} steps", n=n, shape=list(cfg.data.shape))


# --- data path, CLI, evaluation, memory -------------------------------------------------------
def data_path(root: Path, cache: Path, s: dict) -> dict:
    tensors = tensor_module(root, cache, 128)
    per_sample = per_sample_loader(root, 128, 0, "cpu")
    tensor_s = data_epoch_seconds(tensors.train_dataloader(), lambda b: tensors.on_after_batch_transfer(b, 0),
                                  "cpu", 2)
    per_sample_s = data_epoch_seconds(per_sample, lambda b: b, "cpu", 2)
    return entry(tensor_s, per_sample_s, "s/epoch", images=len(per_sample.dataset), batch_size=128)


def wall_seconds(command: list[str], repeats: int = 3, **kwargs) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=REPO, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cli_latency() -> dict:
    command = [sys.executable, "-m", "genexp", "--cfg", "job"]
    # -X importtime lists every module imported, one per stderr line ending in its name.
    trace = subprocess.run([sys.executable, "-X", "importtime", *command[1:]], capture_output=True, text=True,
                           cwd=REPO, check=True).stderr
    torch_imported = any(line.rsplit("|", 1)[-1].strip() == "torch" for line in trace.splitlines())
    return entry(wall_seconds(command), wall_seconds([sys.executable, "-c", "pass"]), "s",
                 torch_imported=torch_imported)


def fid_cold_warm(root: Path, scratch: Path, n: int) -> dict:
    datamodule, model = instantiate_data_and_model(composed(["model=vae", "data=mnist", f"data.root={root}",
                                                             "data.cache_dir=null"]))
    datamodule.setup()
    cache = scratch / "fid_cache"
    ClassifierFeatures(datamodule, cache_dir=str(cache), epochs=1)  # trained once, outside the timing
    extractor = ClassifierFeatures(datamodule, cache_dir=str(cache), epochs=1)
    fakes = draw_images(model, datamodule, n, seed=0)
    times, fids = [], []
    for _ in ("cold", "warm"):
        start = time.perf_counter()
        fids.append(evaluate_samples(fakes, datamodule, extractor, "test", str(cache))["scores"]["fid"])
        times.append(time.perf_counter() - start)
    return entry(times[1], times[0], "s", n_fake=n, n_real=len(datamodule.splits["test"]), fid=fids[1],
                 extractor="classifier")


MEASURE_CHILD = """
import resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_memory(command: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak resident MiB) of a child process, measured by a fresh parent of its own."""
    out = subprocess.run([sys.executable, "-c", MEASURE_CHILD, *command], capture_output=True, text=True,
                         cwd=REPO, env=env, check=True).stdout.split()
    return float(out[0]), int(out[1]) / 1024  # ru_maxrss is in KiB on Linux


def default_run_memory(scratch: Path, s: dict) -> dict:
    env = os.environ | {"GENEXP_DATA_DIR": str(scratch / "data_dir")}
    run_s, run_mib = peak_memory([sys.executable, "-m", "genexp", *s["run"], "print_config=false",
                                  f"hydra.run.dir={scratch / 'default_run'}"], env)
    import_s, import_mib = peak_memory([sys.executable, "-c", "import torch, lightning"], env)
    return entry(run_mib, import_mib, "MiB", time_s=run_s, baseline_time_s=import_s, overrides=s["run"])


BUSY = "while True: pass"


def default_run_loaded(scratch: Path, s: dict) -> dict:
    """The default run beside a competing load, against the same run alone."""
    env = os.environ | {"GENEXP_DATA_DIR": str(scratch / "data_dir")}

    def seconds(name: str, **extra_env: str) -> float:
        command = [sys.executable, "-m", "genexp", *s["loaded_run"], f"hydra.run.dir={scratch / name}"]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=REPO, env=env | extra_env)
        return time.perf_counter() - start

    quiet = seconds("quiet_run")
    quiet_spinning = seconds("quiet_run_default_wait", OMP_WAIT_POLICY="")
    load = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(os.cpu_count() or 1)]
    try:
        loaded = seconds("loaded_run")
        spinning = seconds("loaded_run_default_wait", OMP_WAIT_POLICY="")
    finally:
        for process in load:
            process.kill()
            process.wait()
    return entry(loaded, quiet, "s", default_wait_s=spinning, default_wait_ratio=spinning / quiet_spinning,
                 quiet_default_wait_s=quiet_spinning, busy_processes=len(load), overrides=s["loaded_run"])


def cpu_name() -> str:
    """The processor's model name (Linux), else what the platform module knows."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return names[0] if names else platform.processor() or platform.machine()


def markdown(results: dict) -> str:
    m = results["machine"]
    rows = [f"{results['mode']} mode, {results['date']}, {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch "
            f"threads), {m['gpu'] or 'no GPU'}, torch {m['torch']}, Lightning {m['lightning']}, {results['seconds']} s",
            "", "| figure | genexp | baseline | ratio | unit |", "|---|---:|---:|---:|---|"]
    for name, e in results["entries"].items():
        rows.append(f"| {name} | {e['genexp']:.4g} | {e['baseline']:.4g} | {e['ratio']:.3f} | {e['unit']} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="narrower DCGAN, fewer and shorter epochs: about 1 min on 2 CPU cores")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks" / "benchmark.json")
    parser.add_argument("--only", nargs="+", metavar="FIGURE", help="measure these figures only (names as in the table)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    s = SETTINGS[mode]
    started = time.perf_counter()
    entries = {}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        write_mnist_format(scratch / "data", "MNIST", n_train=s["data_images"], n_test=s["fid_n"])
        figures = {f"overhead_{m}_{size}": (lambda m=m, size=size: overhead(m, size, scratch / "data", scratch, s))
                   for m in ("dcgan", "vae") for size in (28, 64)}
        # The U-Net at the digits' 16 px and MNIST's 28 px (64 px steps take seconds on a CPU).
        figures |= {f"overhead_ddpm_{size}": (lambda size=size: overhead("ddpm", size, scratch / "data", scratch, s))
                    for size in (16, 28)}
        figures["sample_ddim_50"] = lambda: sampling_speed(50, s)
        figures |= {"data_path_epoch": lambda: data_path(scratch / "data", scratch / "cache", s),
                    "cli_cfg_job": cli_latency,
                    "fid_real_stats": lambda: fid_cold_warm(scratch / "data", scratch, s["fid_n"]),
                    "default_run_memory": lambda: default_run_memory(scratch, s),
                    "default_run_loaded": lambda: default_run_loaded(scratch, s)}
        unknown = set(args.only or []) - set(figures)
        if unknown:
            parser.error(f"--only: no figure {sorted(unknown)}; the figures are {', '.join(figures)}")
        for name, measure in figures.items():
            if not args.only or name in args.only:
                entries[name] = measure()
    results = {"mode": mode, "date": date.today().isoformat(), "seconds": round(time.perf_counter() - started, 1),
               "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                           "torch": torch.__version__, "lightning": L.__version__},
               "entries": entries}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table)
    print(table + f"\n{mode} mode, {results['seconds']} s; written to {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
