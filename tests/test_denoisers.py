"""Denoising nets of diffusion models: shapes, refusals, conditioning on time and labels, learning."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONF
from genexp.errors import ConfigError
from genexp.models.base import build_net
from genexp.nets.denoiser_mlp import MLPDenoiser
from genexp.nets.time_embedding import sinusoidal_embedding
from genexp.nets.unet import SelfAttention, UNet
from genexp.validate import validate_config

SMALL = dict(widths=[8, 16], blocks_per_level=1, groups=4)


def with_nonzero_head(net: torch.nn.Module) -> torch.nn.Module:
    """New denoisers predict 0 (a zeroed last layer): give that layer weights so inputs show."""
    generator = torch.Generator().manual_seed(1)
    last = net.head[-1]
    with torch.no_grad():
        last.weight.copy_(0.1 * torch.randn(last.weight.shape, generator=generator))
    return net


@pytest.mark.parametrize(("shape", "kwargs"), [
    ((1, 8, 8), dict(widths=[8, 16], blocks_per_level=1, groups=4)),
    ((1, 16, 16), dict(widths=[8, 16, 16], blocks_per_level=2, groups=8, attention_resolutions=[4])),
    ((3, 12, 20), dict(widths=[8, 8, 16], blocks_per_level=1, groups=2, downsample="avgpool")),
    ((1, 28, 28), dict(widths=[8], blocks_per_level=1, groups=4)),
])
def test_unet_output_has_the_shape_of_its_input(shape, kwargs):
    torch.manual_seed(0)
    net = with_nonzero_head(UNet(shape, **kwargs))
    x = torch.randn(3, *shape)
    out = net(x, torch.rand(3))
    assert out.shape == x.shape
    assert out.abs().sum() > 0


def test_unet_starts_by_predicting_zero():
    out = UNet((1, 8, 8), **SMALL)(torch.randn(2, 1, 8, 8), torch.rand(2))
    assert torch.equal(out, torch.zeros_like(out))


def test_unet_refuses_an_image_size_its_levels_cannot_halve():
    message = r"data\.image_size=12 .* model\.denoiser\.widths=\[8, 8, 8, 8\].* multiple of 8"
    with pytest.raises(ConfigError, match=message):
        UNet((1, 12, 12), widths=[8, 8, 8, 8], groups=4)
    UNet((1, 16, 16), widths=[8, 8, 8, 8], groups=4)  # 16 halves three times


def test_unet_refuses_vectors():
    with pytest.raises(ConfigError, match="model/denoiser=mlp"):
        UNet((2,), **SMALL)


def test_unet_refuses_groups_that_do_not_divide_a_width():
    with pytest.raises(ConfigError, match=r"model\.denoiser\.groups=3 .* 8"):
        UNet((1, 8, 8), widths=[8, 12], groups=3)
    with pytest.raises(ConfigError, match=r"model\.denoiser\.groups=8 does not divide the width 12"):
        UNet((1, 8, 8), widths=[16, 12], groups=8)


def test_unet_refuses_an_unknown_downsampling():
    with pytest.raises(ConfigError, match=r"model\.denoiser\.downsample='maxpool'.*conv, avgpool"):
        UNet((1, 8, 8), downsample="maxpool", **SMALL)


def test_time_changes_the_output():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    for net in (with_nonzero_head(UNet((1, 8, 8), **SMALL)), with_nonzero_head(MLPDenoiser((64,), width=16, depth=2))):
        net.eval()
        inputs = x if isinstance(net, UNet) else x.flatten(1)
        a, b = net(inputs, torch.full((4,), 0.1)), net(inputs, torch.full((4,), 0.9))
        assert not torch.allclose(a, b, atol=1e-4)
        assert torch.equal(a, net(inputs, torch.full((4,), 0.1)))


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_labels_change_the_output_and_the_null_label_is_the_default(kind):
    torch.manual_seed(0)
    if kind == "unet":
        net, x = UNet((1, 8, 8), num_classes=3, **SMALL), torch.randn(4, 1, 8, 8)
    else:
        net, x = MLPDenoiser((2,), width=16, depth=2, num_classes=3), torch.randn(4, 2)
    net = with_nonzero_head(net).eval()
    t = torch.rand(4)
    zeros, twos, null = (net(x, t, torch.full((4,), c)) for c in (0, 2, 3))  # 3 = num_classes: no label
    assert not torch.allclose(zeros, twos, atol=1e-4)
    assert not torch.allclose(zeros, null, atol=1e-4)
    assert torch.equal(net(x, t), null)


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_an_unconditional_net_refuses_labels(kind):
    net, x = ((UNet((1, 8, 8), **SMALL), torch.randn(2, 1, 8, 8)) if kind == "unet"
              else (MLPDenoiser((2,), width=8, depth=1), torch.randn(2, 2)))
    assert not any(isinstance(m, torch.nn.Embedding) for m in net.modules())
    with pytest.raises(ValueError, match="unconditional"):
        net(x, torch.rand(2), torch.zeros(2, dtype=torch.long))


def attention_sides(net: UNet, x: torch.Tensor) -> list[int]:
    """The side of the feature map each SelfAttention module sees in a forward pass."""
    sides = []
    hooks = [m.register_forward_hook(lambda m, args, out: sides.append(args[0].shape[-1]))
             for m in net.modules() if isinstance(m, SelfAttention)]
    net(x, torch.rand(len(x)))
    for hook in hooks:
        hook.remove()
    return sides


def test_attention_is_built_at_the_requested_resolutions_only():
    x = torch.randn(1, 1, 16, 16)
    kwargs = dict(widths=[8, 8, 16], blocks_per_level=2, groups=4)  # maps of 16, 8 and 4 px
    assert attention_sides(UNet((1, 16, 16), **kwargs), x) == []
    # 8 px: two blocks on the way down, two on the way up; 4 px: the two blocks of the lowest level.
    assert attention_sides(UNet((1, 16, 16), attention_resolutions=[8], **kwargs), x) == [8] * 4
    assert sorted(attention_sides(UNet((1, 16, 16), attention_resolutions=[4, 16], **kwargs), x)) == [4] * 2 + [16] * 4


def test_attention_at_a_resolution_that_never_occurs_is_refused():
    with pytest.raises(ConfigError, match=r"model\.denoiser\.attention_resolutions=\[5\].*\[16, 8, 4\]"):
        UNet((1, 16, 16), widths=[8, 8, 8], groups=4, attention_resolutions=[5])


def test_mlp_refuses_images():
    with pytest.raises(ConfigError, match=r"data\.shape=\[1, 8, 8\].*model/denoiser=unet"):
        MLPDenoiser((1, 8, 8))


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_a_few_adam_steps_fit_a_fixed_batch(kind):
    torch.manual_seed(0)
    if kind == "unet":
        net, x = UNet((1, 8, 8), **SMALL), torch.randn(8, 1, 8, 8)
    else:
        net, x = MLPDenoiser((2,), width=32, depth=2), torch.randn(64, 2)
    t, target = torch.rand(len(x)), torch.randn_like(x)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = (net(x, t) - target).pow(2).mean()
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first == pytest.approx(1.0, abs=0.3)  # a zero prediction of unit-variance targets
    assert loss.item() < 0.3 * first


def test_time_embedding_is_bounded_and_tells_times_apart():
    t = torch.linspace(0, 1, 1001)  # the steps of a 1000-step schedule
    for dim in (32, 33):
        emb = sinusoidal_embedding(t, dim)
        assert emb.shape == (len(t), dim)
        assert emb.abs().max() <= 1.0
        distances = torch.cdist(emb, emb) + torch.eye(len(t)) * 1e9
        assert distances.min() > 0.1  # neighbouring steps are distinct
    assert torch.equal(sinusoidal_embedding(t, 33)[:, -1], torch.zeros(len(t)))


@pytest.mark.parametrize(("name", "shape"), [("unet", (1, 16, 16)), ("mlp", (2,))])
def test_the_configs_build_the_nets_the_diffusion_model_calls(name, shape):
    config = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "denoiser" / f"{name}.yaml"))
    validate_config(OmegaConf.create({"model": {"denoiser": config}}))
    net = build_net(config, shape=shape, num_classes=10)
    x = torch.randn(2, *shape)
    assert net(x, torch.rand(2), torch.tensor([0, 10])).shape == x.shape
    bad_config, bad_shape = ({**config, "groups": 3}, shape) if name == "unet" else (config, (1, 4, 4))
    with pytest.raises(ConfigError, match=r"model/denoiser=|model\.denoiser\."):  # its own error, not Hydra's
        build_net(bad_config, shape=bad_shape, num_classes=None)
