"""`compile=<mode>`: the run's networks through `torch.compile`, in place.

Each child network of the LightningModule (every direct child with parameters: encoder, decoder,
generator, discriminator, denoiser, their EMA copies) gets `nn.Module.compile(mode=...)`, which
compiles its call without wrapping it: parameter names, state_dict keys and checkpoints stay as
in an eager run, so resume and `genexp.sample` work unchanged.

Compilation happens at a network's first call. Where it fails there (no C++ compiler for the CPU
backend, an operation the compiler does not support), the run prints one line naming the network
and the error and goes on eagerly with that network: `compile` is a speed option, and the weights
an eager step computes are the same ones, so a long run should not stop over it.
"""

from torch import nn

MODES = ("default", "reduce-overhead", "max-autotune")


def compile_networks(model: nn.Module, mode: str | None) -> list[str]:
    """Compile the networks of `model` with `mode` (None: leave them eager); their names."""
    if mode is None:
        return []
    from torch._dynamo.exc import TorchDynamoException  # imported here: only compiled runs need it
    from torch._inductor.exc import InductorError

    failures = (TorchDynamoException, InductorError)
    names = []
    for name, network in model.named_children():
        if next(network.parameters(), None) is None:
            continue  # buffers only (a noise schedule, a metric): nothing to gain
        network.compile(mode=mode)
        network._compiled_call_impl = _eager_on_failure(network, network._compiled_call_impl, f"model.{name}", mode,
                                                         failures)
        names.append(name)
    return names


def _eager_on_failure(network: nn.Module, compiled, name: str, mode: str, failures: tuple[type, ...]):
    """The compiled call of `network`, which falls back to its eager call for good if compiling fails."""

    def call(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except failures as error:
            message = str(error).strip().splitlines()
            print(f"genexp: compile={mode} failed for {name} ({type(error).__name__}: "
                  f"{message[0] if message else ''}); it runs eagerly", flush=True)
            network._compiled_call_impl = None  # nn.Module.__call__ is eager again from now on
            return network(*args, **kwargs)  # an error of the network itself is raised here

    return call
