"""genexp against plain PyTorch, measured side by side in one run.

Figures (each an entry with the genexp value, the baseline value and ratio = genexp / baseline):
  overhead_<model>_<size>  (dcgan, vae at 28 and 64 px; ddpm at 16 and 28 px) training samples/s of genexp's Trainer (genexp.train.make_trainer: the
                           default callbacks and TensorBoard logger; validation, checkpoints and the
                           progress bar off) against a hand-written loop over deep copies of the same
                           networks and optimizers, on the same uint8 tensors and batch size; higher
                           is better, target ratio >= 0.97; `overhead_ms_per_step` is the difference
                           per step, `step_ms` the plain step; `bare` is the same LightningModule under
                           a bare lightning.Trainer (no genexp callbacks or loggers), timed in the same
                           interleaving, and `targets` judges genexp/bare >= 0.98 and genexp/plain >= 0.97
                           (where the plain step takes >= 20 ms)
  overhead_compiled_vae_28 the VAE with compile=default (genexp.compilation) against the eager loop
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
  run_realnvp_moons, run_nsf_checkerboard
                           wall seconds of a whole `python -m genexp model=<m> data=<d> trainer.max_epochs=20`
                           against scripts/plain/flow_2d.py doing the same work (scripts/whole_run.py);
                           here ratio = plain / genexp, target >= 0.85
  gmm_fit_time, gmm_em_time_same_start, gmm_nll_same_start, gmm_nll_own_start
                           model=gmm's EM fit against scikit-learn's GaussianMixture on the 2D toy sets
                           (scripts/gmm_vs_sklearn.py, `--only gmm_vs_sklearn`): fit time target ratio
                           <= 3, test NLL within 1e-4 nats

Images are random uint8 files in MNIST's idx format (tests/fake_data.py), resized to 64 px for
the 64 px entries: throughput does not depend on pixel values. Timings: one warm-up epoch, then
`repeats` epochs of each, alternating which of the two runs first (the plain epoch runs before
odd Trainer epochs and after even ones); the median is reported. Each Trainer epoch is timed
from its start to its end, before the other callbacks' end-of-epoch work (image grids): their
per-step work is inside the timing.

    python scripts/benchmark.py --quick --out outputs/benchmarks/quick.json   # every figure, small sizes: a few minutes
    python scripts/benchmark.py --out outputs/benchmarks/full.json            # the configs' networks, FID on 10,000
    python scripts/benchmark.py --scaling --out outputs/benchmarks/scaling.json   # batch, data, FID, DDP scaling
    python scripts/benchmark.py --device-check [--dry-run] --out X.json       # scripts/device_check.sh
"""

import argparse
import contextlib
import copy
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_malloc_arena() -> None:
    """Every thread allocates from glibc's one main arena. The bare Trainer's fit runs in a thread of
    its own, which would otherwise get a fresh arena: for steps that allocate large tensors that alone
    made it up to 24 % faster than the same work in the main thread (overhead_dcgan_28, one thread),
    a difference of allocators, not of trainers. Must run before any thread starts; no-op off glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


one_malloc_arena()
sys.path.insert(0, str(REPO / "scripts"))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from data_path_benchmark import data_epoch_seconds, per_sample_loader, tensor_module  # noqa: E402
from fake_data import write_mnist_format  # noqa: E402  (on the path through data_path_benchmark)
from gmm_vs_sklearn import gmm_vs_sklearn  # noqa: E402
from whole_run import ENTRIES as WHOLE_RUNS  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from genexp.compilation import compile_networks  # noqa: E402
from genexp.config_dir import config_dir  # noqa: E402
from genexp.metrics.features import ClassifierFeatures  # noqa: E402
from genexp.metrics.sample_quality import draw_images, evaluate_samples  # noqa: E402
from genexp.models.gan import discriminator_loss, generator_loss  # noqa: E402
from genexp.report import cpu_name  # noqa: E402
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


# Figures that measure several entries at once, under their own names.
FIGURE_GROUPS = ("gmm_vs_sklearn",)


def entry(genexp: float, baseline: float, unit: str, **extra) -> dict:
    return {"genexp": genexp, "baseline": baseline, "ratio": genexp / baseline, "unit": unit, **extra}


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


# --- framework overhead -----------------------------------------------------------------------
class Amp:
    """Mixed precision in the hand-written loop, as Lightning's MixedPrecision plugin does it:
    autocast around the training step (its backward outside, unless the step calls it itself, as a
    GAN's does), and for float16 a GradScaler (scaled backward, scaler step, update after each)."""

    DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}

    def __init__(self, precision: str = "32-true", device: str = "cpu") -> None:
        self.dtype, self.device = self.DTYPES.get(precision), device
        self.scaler = torch.amp.GradScaler(device) if self.dtype == torch.float16 else None

    def autocast(self):
        return torch.autocast(self.device, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    def backward(self, loss) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


def gan_step(model, optimizers, amp: Amp = Amp()):
    """One discriminator and one generator step of the hand-written loop (as GAN.training_step)."""
    opt_g, opt_d = optimizers
    d, latent = model.discriminator, model.latent_dim

    def step(real, labels):
        with amp.autocast():
            with torch.no_grad():
                fake = model.generate(torch.randn(len(real), latent, device=real.device), None)
            real_out, fake_out = d(real, None).float(), d(fake, None).float()
            loss = discriminator_loss(model.loss, real_out, fake_out, torch.ones_like(real_out),
                                      torch.zeros_like(fake_out))
            opt_d.zero_grad()
            amp.backward(loss)
            amp.step(opt_d)
            d.requires_grad_(False)  # as Lightning's toggled_optimizer: no discriminator gradients
            fake = model.generate(torch.randn(len(real), latent, device=real.device), None)
            loss = generator_loss(model.loss, d(fake, None).float())
            opt_g.zero_grad()
            amp.backward(loss)
            amp.step(opt_g)
            d.requires_grad_(True)
        model.generator_ema.update(model.generator)
    return step


def vae_step(model, optimizer, amp: Amp = Amp()):
    def step(x, labels):
        with amp.autocast():
            terms = model.terms(x, labels)
            loss = terms["recon"].mean() + model.beta * terms["kl"].mean()
        optimizer.zero_grad()
        amp.backward(loss)
        amp.step(optimizer)
    return step


def ddpm_step(model, optimizer, amp: Amp = Amp()):
    """One denoising step of the hand-written loop (as Diffusion.training_step and optimizer_step)."""
    def step(x, labels):
        with amp.autocast():
            x = model.to_model_space(x)
            t = model.schedule.training_times(len(x)).to(x.device)
            loss = model.loss_terms(x, None, t, torch.randn_like(x), model.denoiser).mean()
        optimizer.zero_grad()
        amp.backward(loss)
        amp.step(optimizer)
        model.denoiser_ema.update(model.denoiser)
    return step


STEPS = {"dcgan": gan_step, "vae": vae_step, "ddpm": ddpm_step}


class ThreadedFit:
    """A Trainer's fit in a thread of its own, one epoch per `epoch()` call: its epochs interleave
    with those of the fit in the main thread. Between calls it waits at the start of its next
    epoch, so its own between-epoch work never overlaps the other side's timed epochs."""

    def __init__(self, trainer_kwargs: dict, model, datamodule, sync) -> None:
        self.parked, self.go, self.seconds, self.error = threading.Semaphore(0), threading.Semaphore(0), [], None
        self.peaks: list[float] = []
        fit = self

        class Timer(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                fit.parked.release()
                fit.go.acquire()
                self.start = sync()

            def on_train_epoch_end(self, trainer, pl_module):
                fit.seconds.append(sync() - self.start)
                fit.peaks.append(peak_mib())

        self.trainer = L.Trainer(**trainer_kwargs, callbacks=[Timer()])
        self.thread = threading.Thread(target=self._fit, args=(model, datamodule), daemon=True)
        self.thread.start()
        self._wait()  # set up and parked before its first epoch

    def _fit(self, model, datamodule) -> None:
        try:
            self.trainer.fit(model, datamodule=datamodule)
        except BaseException as error:  # noqa: BLE001  (raised again in the main thread)
            self.error = error
        finally:
            self.parked.release()

    def _wait(self) -> None:
        self.parked.acquire()
        if self.error is not None:
            raise RuntimeError("the bare Lightning fit failed") from self.error

    def epoch(self) -> float:
        reset_peak()
        self.go.release()
        self._wait()
        return self.seconds[-1]


def peak_mib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def overhead(model_name: str, size: int, root: Path, scratch: Path, s: dict, device: str = "cpu",
             precision: str = "32-true", compile: str | None = None, channels_last: bool = False,
             preload: bool = False) -> dict:
    """Training samples/s of genexp's Trainer, of the same LightningModule under a bare Lightning
    Trainer, and of a hand-written loop, their epochs interleaved. `compile` compiles the networks
    of the two Lightning sides (the loop stays eager); `channels_last` converts all three sides'
    weights; `preload` keeps the data on the device (data.preload_to_device and the loop's copy)."""
    run_dir = scratch / f"run_{model_name}_{size}_{precision}_{compile}_{channels_last}_{preload}"
    accelerator = "gpu" if device == "cuda" else device
    overrides = [f"model={model_name}", "data=mnist", f"data.root={root}", f"data.image_size={size}",
                 "data.cache_dir=null", f"data.batch_size={s['batch_size']}", f"trainer.accelerator={accelerator}",
                 f"trainer.precision={precision}", f"data.preload_to_device={str(preload).lower()}",
                 f"paths.output_dir={run_dir}", "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0",
                 "trainer.limit_val_batches=0", f"trainer.limit_train_batches={s['batches']}",
                 f"trainer.max_epochs={s['repeats'] + 1}", "callbacks.model_checkpoint=null",
                 "+trainer.enable_checkpointing=false", "+trainer.enable_model_summary=false",
                 *s.get("model_overrides", {}).get(model_name, [])]
    if model_name == "dcgan" and s["gan_width"]:
        overrides += [f"model.generator.width={s['gan_width']}", f"model.discriminator.width={s['gan_width']}"]
    cfg = composed(overrides)
    L.seed_everything(0)
    datamodule, model = instantiate_data_and_model(cfg)
    # Each side its own copies; the Lightning sides' data modules set up under their own Trainers
    # (where data.preload_to_device moves the set to the device).
    source, bare_data = copy.deepcopy(datamodule), copy.deepcopy(datamodule)
    source.setup()
    images, labels = source.splits["train"].tensors
    if preload:
        images, labels = images.to(device), labels.to(device)
    assert len(images) >= s["batches"] * s["batch_size"], "too few training images for full batches"
    plain, bare = copy.deepcopy(model).to(device), copy.deepcopy(model)
    if channels_last:
        for network in (plain, bare, model):
            network.to(memory_format=torch.channels_last)
    compiled = compile_networks(model, compile) + compile_networks(bare, compile)
    plain.train()
    step = STEPS[model_name](plain, plain.configure_optimizers(), Amp(precision, device))
    n_samples = s["batches"] * s["batch_size"]
    times = {"plain": [], "bare": [], "genexp": []}
    peaks = {"plain": [], "bare": [], "genexp": []}

    def sync() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def plain_epoch() -> None:
        order = torch.randperm(len(images), device=images.device)
        reset_peak()
        start = sync()
        for i in range(s["batches"]):
            index = order[i * s["batch_size"]:(i + 1) * s["batch_size"]]
            batch = (images[index].to(device, non_blocking=True), labels[index].to(device, non_blocking=True))
            step(*datamodule.on_after_batch_transfer(batch, 0))
        times["plain"].append(sync() - start)
        peaks["plain"].append(peak_mib())

    bare_fit = ThreadedFit(dict(accelerator=accelerator, devices=1, precision=precision, max_epochs=s["repeats"] + 1,
                                limit_train_batches=s["batches"], limit_val_batches=0, num_sanity_val_steps=0,
                                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False), bare, bare_data, sync)

    def bare_epoch() -> None:
        times["bare"].append(bare_fit.epoch())
        peaks["bare"].append(bare_fit.peaks[-1])

    class Interleave(L.Callback):
        """Times each genexp epoch's training steps, with a plain and a bare Lightning epoch before
        it (odd epochs: plain, bare, genexp) or after it (even: genexp, bare, plain), so that a
        steady drift cancels between any two sides. First among the callbacks: the others'
        end-of-epoch work (image grids) falls outside the timing, their per-step work inside."""

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch % 2:
                plain_epoch()
                bare_epoch()
            reset_peak()
            self.start = sync()

        def on_train_epoch_end(self, trainer, pl_module):
            times["genexp"].append(sync() - self.start)
            peaks["genexp"].append(peak_mib())
            if trainer.current_epoch % 2 == 0:
                bare_epoch()
                plain_epoch()

    trainer = make_trainer(cfg, Interleave(), model=model)
    trainer.fit(model, datamodule=datamodule)  # should it fail, the bare fit's thread (a daemon) waits on
    bare_fit.thread.join()
    rates = {side: n_samples / statistics.median(t[1:]) for side, t in times.items()}  # epoch 0 warms up
    # The difference is a fixed cost per step: the ratio rises towards 1 as steps get longer.
    overhead_ms = 1000 * s["batch_size"] * (1 / rates["genexp"] - 1 / rates["plain"])
    step_ms = 1000 * s["batch_size"] / rates["plain"]
    return entry(rates["genexp"], rates["plain"], "samples/s", bare=rates["bare"],
                 targets=overhead_targets(rates, step_ms), overhead_ms_per_step=overhead_ms,
                 bare_overhead_ms_per_step=1000 * s["batch_size"] * (1 / rates["genexp"] - 1 / rates["bare"]),
                 step_ms=step_ms, batch_size=s["batch_size"], batches=s["batches"], repeats=len(times["genexp"]) - 1,
                 shape=list(datamodule.shape), device=device, precision=precision, compile=compile,
                 compiled=sorted(set(compiled)), channels_last=channels_last, preload=preload,
                 peak_memory_mib={side: max(p) if p and p[0] is not None else None for side, p in peaks.items()},
                 callbacks=[type(c).__name__ for c in trainer.callbacks[1:]],
                 loggers=[type(x).__name__ for x in trainer.loggers],
                 nets=describe_nets(cfg))


# genexp against the bare Lightning Trainer always; against the plain loop where a step is long
# enough for a fixed cost of about 0.5 ms to stay within 3 %.
BARE_TARGET, PLAIN_TARGET, PLAIN_TARGET_MIN_STEP_MS = 0.98, 0.97, 20.0


def overhead_targets(rates: dict, step_ms: float) -> dict:
    bare, plain = rates["genexp"] / rates["bare"], rates["genexp"] / rates["plain"]
    applies = step_ms >= PLAIN_TARGET_MIN_STEP_MS
    return {"genexp/bare": {"ratio": bare, "target": BARE_TARGET, "met": bare >= BARE_TARGET},
            "genexp/plain": {"ratio": plain, "target": PLAIN_TARGET, "met": plain >= PLAIN_TARGET if applies else None,
                             "applies": f"plain step >= {PLAIN_TARGET_MIN_STEP_MS:g} ms"}}


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


# --- device check (scripts/device_check.sh) ------------------------------------------------------
DEVICE_CHECK = {  # the GPU run: the configs' networks; the dry run: tiny ones on the CPU
    "gpu": {"device": "cuda", "batch_size": 128, "batches": 40, "repeats": 4, "gan_width": None, "size": 28,
            "data_images": 6000, "budget_s": 200, "precisions": ["32-true", "bf16-mixed", "16-mixed"]},
    "dry": {"device": "cpu", "batch_size": 8, "batches": 2, "repeats": 1, "gan_width": 8, "size": 16,
            "data_images": 64, "budget_s": 600, "precisions": ["32-true", "bf16-mixed", "16-mixed"],
            "model_overrides": {"ddpm": ["model.denoiser.widths=[8,16]", "model.denoiser.groups=4",
                                         "model.denoiser.attention_resolutions=[]"],
                                "vae": ["model.encoder.hidden_dims=[32]", "model.decoder.hidden_dims=[32]"]}},
}
CONV_MODELS = ("dcgan", "ddpm")  # the VAE's MLP has no 4-D weights for channels_last


def device_check_plan(dry_run: bool) -> dict:
    """name -> overhead() keyword arguments, or the reason the variant is skipped. Variants (compile,
    channels_last, preloaded data) are measured in bf16-mixed, the precision to use on a recent GPU."""
    s = DEVICE_CHECK["dry" if dry_run else "gpu"]
    plan = {}
    for model in ("vae", "dcgan", "ddpm"):
        name = f"{model}_{s['size']}"
        for precision in s["precisions"]:
            plan[f"{name}/{precision}"] = (dict(precision=precision) if not dry_run or precision != "16-mixed"
                                           else "16-mixed needs a CUDA GPU (float16 autocast and its GradScaler)")
        plan[f"{name}/bf16-mixed/channels_last"] = (
            "an MLP has no 4-D weights to convert" if model not in CONV_MODELS
            else "channels_last pays on a GPU's tensor cores; the dry run (CPU) skips it" if dry_run
            else dict(precision="bf16-mixed", channels_last=True))
        plan[f"{name}/bf16-mixed/preloaded"] = (
            "on the CPU the data is already in the device's memory" if dry_run
            else dict(precision="bf16-mixed", preload=True))
    for model in ("vae", "dcgan", "ddpm"):  # last: compiling takes the longest
        plan[f"{model}_{s['size']}/bf16-mixed/compiled"] = (
            "the dry run compiles the VAE only (compiling conv nets on a CPU takes minutes)"
            if dry_run and model != "vae" else dict(precision="bf16-mixed", compile="default"))
    return plan


def device_check(scratch: Path, dry_run: bool, save) -> dict:
    """The plan's entries, each saved as soon as it is measured (`save(entries)`), so that a run
    stopped by its time limit keeps what it measured; entries past the budget are skipped."""
    s = DEVICE_CHECK["dry" if dry_run else "gpu"]
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("device check: no CUDA GPU here (run it with DRY_RUN=1 on a CPU)")
    write_mnist_format(scratch / "data", "MNIST", n_train=s["data_images"], n_test=16)
    started, entries = time.perf_counter(), {}
    for name, plan in device_check_plan(dry_run).items():
        model = name.split("_")[0]
        if isinstance(plan, str):
            entries[name] = {"skipped": plan}
        elif time.perf_counter() - started > s["budget_s"]:
            entries[name] = {"skipped": f"out of time: the check's budget is {s['budget_s']} s"}
        else:
            entries[name] = overhead(model, s["size"], scratch / "data", scratch, s, device=s["device"], **plan)
            print(f"{name}: genexp/plain {entries[name]['ratio']:.3f}, genexp/bare "
                  f"{entries[name]['targets']['genexp/bare']['ratio']:.3f}, "
                  f"peak {entries[name]['peak_memory_mib']['genexp']} MiB", flush=True)
        save(entries)
    return entries


# --- scaling (--scaling) ------------------------------------------------------------------------
SCALING = {
    "quick": {"batch_sizes": [32, 64, 128, 256, 512], "samples_per_epoch": 1024, "repeats": 1, "gan_width": 16,
              "data_images": [1000, 2000, 4000, 6000], "fid_n": [100, 200, 500, 1000], "ddp_images": 2000,
              "ddp_epochs": 2},
    "full": {"batch_sizes": [32, 64, 128, 256, 512], "samples_per_epoch": 4096, "repeats": 3, "gan_width": None,
             "data_images": [10000, 20000, 40000, 60000], "fid_n": [1000, 2000, 5000, 10000], "ddp_images": 10000,
             "ddp_epochs": 3},
}


def batch_scaling(root: Path, scratch: Path, sc: dict) -> dict:
    """Throughput of the VAE and the DCGAN at 28 px against the batch size (three ways, as overhead)."""
    rows = {}
    for model in ("vae", "dcgan"):
        for batch in sc["batch_sizes"]:
            s = {"batch_size": batch, "batches": max(2, sc["samples_per_epoch"] // batch), "repeats": sc["repeats"],
                 "gan_width": sc["gan_width"]}
            e = overhead(model, 28, root, scratch, s)
            rows[f"{model}_28/batch_{batch}"] = {k: e[k] for k in ("genexp", "baseline", "bare", "ratio", "step_ms",
                                                                   "batch_size", "batches", "nets")}
    return rows


def data_scaling(scratch: Path, sc: dict) -> dict:
    """Seconds of a data-only epoch, cached uint8 tensors against torchvision's per-sample path."""
    rows = {}
    for n in sc["data_images"]:
        root = scratch / f"data_{n}"
        write_mnist_format(root, "MNIST", n_train=n, n_test=16)
        rows[f"images_{n}"] = data_path(root, scratch / f"cache_{n}", {})
    return rows


def fid_scaling(root: Path, scratch: Path, sc: dict) -> dict:
    """Seconds of an FID evaluation (classifier extractor, warm real-data features) against the
    number of generated samples; the real test split is as large as the largest."""
    datamodule, model = instantiate_data_and_model(composed(["model=vae", "data=mnist", f"data.root={root}",
                                                             "data.cache_dir=null"]))
    datamodule.setup()
    cache = scratch / "fid_scaling_cache"
    extractor = ClassifierFeatures(datamodule, cache_dir=str(cache), epochs=1)
    fakes = draw_images(model, datamodule, max(sc["fid_n"]), seed=0)
    evaluate_samples(fakes[:100], datamodule, extractor, "test", str(cache))  # real features: cached
    rows = {}
    for n in sc["fid_n"]:
        start = time.perf_counter()
        evaluate_samples(fakes[:n], datamodule, extractor, "test", str(cache))
        rows[f"samples_{n}"] = {"seconds": time.perf_counter() - start, "n_fake": n,
                                "n_real": len(datamodule.splits["test"]), "extractor": "classifier"}
    return rows


def ddp_scaling(scratch: Path, sc: dict) -> dict:
    """Training samples/s of `python -m genexp` (DCGAN, 28 px) in 1 and in 2 CPU processes
    (trainer=ddp): each from two runs of E and 1 epochs, so start-up and the first epoch cancel."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cores < 2:
        return {"skipped": f"2 processes need 2 cores; this process may use {cores}"}
    root = scratch / "ddp_data"
    write_mnist_format(root, "MNIST", n_train=sc["ddp_images"], n_test=16)
    common = ["model=dcgan", "data=mnist", f"data.root={root}", "data.cache_dir=null", "test=false", "logger=none",
              "callbacks=none", "trainer.accelerator=cpu", "trainer.limit_val_batches=0",
              "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "print_config=false"]
    if sc["gan_width"]:
        common += [f"model.generator.width={sc['gan_width']}", f"model.discriminator.width={sc['gan_width']}"]
    train_images = round(sc["ddp_images"] * 0.9)  # data.val_fraction of the mnist config: 0.1
    rows = {}
    for devices in (1, 2):
        trainer = ["trainer=ddp", f"trainer.devices={devices}"] if devices > 1 else ["trainer.devices=1"]
        seconds = {}
        for epochs in (1, 1 + sc["ddp_epochs"]):
            run_dir = scratch / f"ddp_{devices}_{epochs}"
            seconds[epochs] = wall_seconds([sys.executable, "-m", "genexp", *common, *trainer,
                                            f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}"], repeats=1)
        rate = sc["ddp_epochs"] * train_images / (seconds[1 + sc["ddp_epochs"]] - seconds[1])
        rows[f"processes_{devices}"] = {"samples_per_s": rate, "run_s": seconds, "devices": devices}
    rows["efficiency"] = rows["processes_2"]["samples_per_s"] / (2 * rows["processes_1"]["samples_per_s"])
    return rows


SCALING_PARTS = ("batch_size", "data_path", "fid", "ddp")


def scaling(scratch: Path, mode: str, parts: tuple[str, ...] = SCALING_PARTS) -> dict:
    sc = SCALING[mode]
    write_mnist_format(scratch / "data", "MNIST", n_train=sc["samples_per_epoch"] + 1000, n_test=max(sc["fid_n"]))
    measure = {"batch_size": lambda: batch_scaling(scratch / "data", scratch, sc),
               "data_path": lambda: data_scaling(scratch, sc),
               "fid": lambda: fid_scaling(scratch / "data", scratch, sc), "ddp": lambda: ddp_scaling(scratch, sc)}
    return {part: measure[part]() for part in parts}


def scaling_markdown(results: dict) -> str:
    m, t = results["machine"], results["scaling"]
    rows = [f"scaling, {results['mode']} mode, {results['date']}, {m['cpu']} ({m['cores']} cores, {m['torch_threads']} "
            f"torch threads), torch {m['torch']}, Lightning {m['lightning']}, {results['seconds']} s"]
    if "batch_size" in t:
        rows += ["", "| throughput, samples/s | batch | plain loop | bare Lightning | genexp | genexp/plain | plain step ms |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
    for name, e in t.get("batch_size", {}).items():
        rows.append(f"| {name.split('/')[0]} ({e['nets']}) | {e['batch_size']} | {e['baseline']:.4g} | {e['bare']:.4g} | "
                    f"{e['genexp']:.4g} | {e['ratio']:.3f} | {e['step_ms']:.3g} |")
    if "data_path" in t:
        rows += ["", "| data-only epoch | images | cached tensors s | per-sample s | ratio |", "|---|---:|---:|---:|---:|"]
    for e in t.get("data_path", {}).values():
        rows.append(f"| batch 128 | {e['images']} | {e['genexp']:.4g} | {e['baseline']:.4g} | {e['ratio']:.4f} |")
    if "fid" in t:
        rows += ["", "| FID evaluation (classifier extractor) | generated samples | real samples | seconds |",
                 "|---|---:|---:|---:|"]
    for e in t.get("fid", {}).values():
        rows.append(f"| warm real features | {e['n_fake']} | {e['n_real']} | {e['seconds']:.3g} |")
    ddp = t.get("ddp")
    if ddp and "skipped" in ddp:
        rows += ["", f"DDP on the CPU: skipped ({ddp['skipped']})."]
    elif ddp:
        rows += ["", "| DCGAN 28 px, `python -m genexp` | processes | samples/s | efficiency |", "|---|---:|---:|---:|",
                 f"| trainer.devices=1 | 1 | {ddp['processes_1']['samples_per_s']:.4g} | 1 |",
                 f"| trainer=ddp trainer.devices=2 | 2 | {ddp['processes_2']['samples_per_s']:.4g} | "
                 f"{ddp['efficiency']:.3f} |"]
    return "\n".join(rows) + "\n"


def heading(results: dict) -> str:
    m = results["machine"]
    return (f"{results['mode']} mode, {results['date']}, {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch "
            f"threads), {m['gpu'] or 'no GPU'}, torch {m['torch']}, Lightning {m['lightning']}, {results['seconds']} s")


def markdown(results: dict) -> str:
    rows = [heading(results), "", "| figure | genexp | baseline | ratio | unit | target |", "|---|---:|---:|---:|---|---|"]
    for name, e in results["entries"].items():
        goal = e.get("target")
        goal = f"ratio >= {goal:g}" if isinstance(goal, (int, float)) else goal
        target = (f"{goal}: {'met' if e['met'] else 'NOT met'}" if goal is not None
                  else "the table below" if "targets" in e else "")
        rows.append(f"| {name} | {e['genexp']:.4g} | {e['baseline']:.4g} | {e['ratio']:.3f} | {e['unit']} | {target} |")
    return "\n".join(rows) + "\n" + overhead_table(results["entries"])


def overhead_table(entries: dict) -> str:
    """The overhead entries measured three ways, with their targets (empty without such entries)."""
    three_way = {name: e for name, e in entries.items() if "targets" in e}
    skipped = [f"- {name}: skipped ({e['skipped']})" for name, e in entries.items() if "skipped" in e]
    if not three_way:
        return "\n".join(["", *skipped, ""]) if skipped else ""

    def judged(target: dict) -> str:
        met = {True: "met", False: "**missed**", None: "n/a"}[target["met"]]
        return f"{target['ratio']:.3f} ({met})"

    rows = ["", f"| overhead, samples/s | plain loop | bare Lightning | genexp | genexp/bare (>= {BARE_TARGET}) | "
            f"genexp/plain (>= {PLAIN_TARGET} if step >= {PLAIN_TARGET_MIN_STEP_MS:g} ms) | plain step ms |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for name, e in three_way.items():
        rows.append(f"| {name} | {e['baseline']:.4g} | {e['bare']:.4g} | {e['genexp']:.4g} | "
                    f"{judged(e['targets']['genexp/bare'])} | {judged(e['targets']['genexp/plain'])} | "
                    f"{e['step_ms']:.3g} |")
    if any(e["peak_memory_mib"]["genexp"] is not None for e in three_way.values()):
        rows += ["", "| peak GPU memory, MiB (all three sides' weights resident) | plain loop | bare Lightning | genexp |",
                 "|---|---:|---:|---:|"]
        rows += [f"| {name} | {e['peak_memory_mib']['plain']:.0f} | {e['peak_memory_mib']['bare']:.0f} | "
                 f"{e['peak_memory_mib']['genexp']:.0f} |" for name, e in three_way.items()]
    return "\n".join([*rows, *([""] + skipped if skipped else [])]) + "\n"


def machine() -> dict:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__, "lightning": L.__version__}


def write_results(out: Path, results: dict, table: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="narrower DCGAN, fewer and shorter epochs, small whole runs and mixtures: a few minutes")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "benchmarks" / "benchmark.json")
    parser.add_argument("--only", nargs="+", metavar="FIGURE", help="measure these figures only (names as in the table)")
    parser.add_argument("--scaling", action="store_true", help="the scaling tables instead of the figures (with "
                        "--quick: small sizes, to check the mode)")
    parser.add_argument("--parts", nargs="+", choices=SCALING_PARTS, default=list(SCALING_PARTS),
                        help="with --scaling: these tables only")
    parser.add_argument("--device-check", action="store_true", help="the GPU check of scripts/device_check.sh")
    parser.add_argument("--dry-run", action="store_true", help="with --device-check: tiny sizes on the CPU")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    s = SETTINGS[mode]
    started = time.perf_counter()
    entries = {}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        if args.device_check:
            results = {"mode": "device-check dry run" if args.dry_run else "device-check",
                       "date": date.today().isoformat(), "machine": machine(),
                       "settings": {k: v for k, v in DEVICE_CHECK["dry" if args.dry_run else "gpu"].items()}}

            def save(entries: dict) -> None:
                results.update(seconds=round(time.perf_counter() - started, 1), entries=entries)
                write_results(args.out, results, heading(results) + "\n" + overhead_table(entries))

            device_check(scratch, args.dry_run, save)
            print(f"device check: {results['seconds']} s; written to {args.out} and {args.out.with_suffix('.md')}")
            return
        if args.scaling:
            result = scaling(scratch, mode, tuple(args.parts))
            results = {"mode": mode, "date": date.today().isoformat(), "seconds": round(time.perf_counter() - started, 1),
                       "machine": machine(), "scaling": result}
            table = scaling_markdown(results)
            write_results(args.out, results, table)
            print(table + f"\nwritten to {args.out} and {args.out.with_suffix('.md')}")
            return
        write_mnist_format(scratch / "data", "MNIST", n_train=s["data_images"], n_test=s["fid_n"])
        figures = {f"overhead_{m}_{size}": (lambda m=m, size=size: overhead(m, size, scratch / "data", scratch, s))
                   for m in ("dcgan", "vae") for size in (28, 64)}
        # The U-Net at the digits' 16 px and MNIST's 28 px (64 px steps take seconds on a CPU).
        figures |= {f"overhead_ddpm_{size}": (lambda size=size: overhead("ddpm", size, scratch / "data", scratch, s))
                    for size in (16, 28)}
        # The VAE with its networks compiled (genexp.compilation) against the eager plain loop.
        figures["overhead_compiled_vae_28"] = lambda: overhead("vae", 28, scratch / "data", scratch, s,
                                                               compile="default")
        figures["sample_ddim_50"] = lambda: sampling_speed(50, s)
        figures |= {"data_path_epoch": lambda: data_path(scratch / "data", scratch / "cache", s),
                    "cli_cfg_job": cli_latency,
                    "fid_real_stats": lambda: fid_cold_warm(scratch / "data", scratch, s["fid_n"]),
                    "default_run_memory": lambda: default_run_memory(scratch, s),
                    "default_run_loaded": lambda: default_run_loaded(scratch, s),
                    # model=gmm's EM against scikit-learn's GaussianMixture: four entries (scripts/gmm_vs_sklearn.py)
                    "gmm_vs_sklearn": lambda: gmm_vs_sklearn(seeds=(0, 1, 2) if mode == "full" else (0,),
                                                             repeats=3 if mode == "full" else 1)}
        # Whole runs: a genexp command line against a plain script doing the same (scripts/whole_run.py).
        figures |= {name: (lambda run=run: run(repeats=3 if mode == "full" else 1, epochs=20 if mode == "full" else 2,
                                               work=scratch / "whole_run"))
                    for name, run in WHOLE_RUNS.items()}
        unknown = set(args.only or []) - set(figures)
        if unknown:
            parser.error(f"--only: no figure {sorted(unknown)}; the figures are {', '.join(figures)}")
        for name, measure in figures.items():
            if not args.only or name in args.only:
                result = measure()
                # A group of figures (several entries, each with its own ratio) or one entry.
                entries |= result if name in FIGURE_GROUPS else {name: result}
    results = {"mode": mode, "date": date.today().isoformat(), "seconds": round(time.perf_counter() - started, 1),
               "machine": machine(), "entries": entries}
    table = markdown(results)
    write_results(args.out, results, table)
    print(table + f"\n{mode} mode, {results['seconds']} s; written to {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
