"""``find_bottleneck`` and ``MIRegularisedNetwork`` on tiny dynamic_network_architectures U-Nets."""
from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunetv2_imnet.mi.config import MIConfig
from nnunetv2_imnet.mi.head import MIOutput, build_mi_head
from nnunetv2_imnet.training.network import Bottleneck, MIRegularisedNetwork, find_bottleneck

pytestmark = pytest.mark.usefixtures("single_thread")


def tiny_unet(ndim=3, architecture="plain", input_channels=1, strides=(1, 2, 2), deep_supervision=True, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    norm = nn.InstanceNorm2d if ndim == 2 else nn.InstanceNorm3d
    common = dict(input_channels=input_channels, n_stages=3, features_per_stage=[4, 8, 16], conv_op=conv,
                  kernel_sizes=3, strides=list(strides), num_classes=2, n_conv_per_stage_decoder=1, conv_bias=True,
                  norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                  nonlin_kwargs={"inplace": True}, deep_supervision=deep_supervision)
    if architecture == "plain":
        return PlainConvUNet(n_conv_per_stage=1, **common)
    return ResidualEncoderUNet(n_blocks_per_stage=1, **common)


def tiny_wrapper(ndim=3, architecture="plain", input_channels=1, image_channels=1, patch=8, seed=0, **mi_options):
    network = tiny_unet(ndim, architecture, input_channels, seed=seed)
    patch_size = (patch,) * ndim
    bottleneck = find_bottleneck(network, input_channels, patch_size)
    config = MIConfig(**{"batch_negatives": 2, "location_negatives": 3, **mi_options})
    head = build_mi_head(config, bottleneck.channels, image_channels, bottleneck.stride)
    return MIRegularisedNetwork(network, head, image_channels), patch_size


# ------------------------------------------------------------------------------------------------ find_bottleneck
@pytest.mark.parametrize("architecture", ["plain", "residual"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_find_bottleneck_isotropic(architecture, ndim):
    network = tiny_unet(ndim, architecture)
    bottleneck = find_bottleneck(network, 1, (16,) * ndim)
    assert bottleneck == Bottleneck(16, (4,) * ndim, (4,) * ndim)
    assert bottleneck.num_locations == 4 ** ndim
    # shapes come from a meta copy: the network itself is untouched
    assert all(p.device.type == "cpu" for p in network.parameters())


@pytest.mark.parametrize("architecture", ["plain", "residual"])
@pytest.mark.parametrize("strides, patch, grid, stride", [
    ([[1, 1], [1, 2], [2, 2]], (8, 16), (4, 4), (2, 4)),
    ([[1, 1], [2, 2], [2, 1]], (12, 8), (3, 4), (4, 2)),
    ([[1, 1, 1], [1, 2, 2], [2, 2, 2]], (8, 16, 16), (4, 4, 4), (2, 4, 4)),
    ([[1, 1, 1], [1, 2, 2], [1, 2, 2]], (4, 16, 8), (4, 4, 2), (1, 4, 4)),
])
def test_find_bottleneck_anisotropic(architecture, strides, patch, grid, stride):
    network = tiny_unet(len(patch), architecture, input_channels=2, strides=strides)
    assert find_bottleneck(network, 2, patch) == Bottleneck(16, grid, stride)


def test_find_bottleneck_rejects_networks_without_encoder_decoder():
    with pytest.raises(TypeError, match=r"Sequential has no such split"):
        find_bottleneck(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 2, 1)), 1, (16, 16))

    class OnlyEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Conv2d(1, 4, 3)
            self.decoder = "not a module"

    with pytest.raises(TypeError, match=r"OnlyEncoder has no such split"):
        find_bottleneck(OnlyEncoder(), 1, (16, 16))


def test_find_bottleneck_rejects_encoder_without_skip_list():
    class TensorEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Conv2d(1, 4, 3, stride=2, padding=1)
            self.decoder = nn.Identity()

    with pytest.raises(TypeError, match=r"TensorEncoder.encoder must return a list of skip tensors"):
        find_bottleneck(TensorEncoder(), 1, (16, 16))


def test_find_bottleneck_rejects_patch_not_multiple_of_grid():
    with pytest.raises(ValueError, match=r"Patch size \(10, 10\) is not a multiple of the bottleneck grid \(3, 3\)"):
        find_bottleneck(tiny_unet(2), 1, (10, 10))


# ------------------------------------------------------------------------------------------------ the wrapper
@pytest.mark.parametrize("architecture", ["plain", "residual"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_train_mode_returns_segmentation_and_mi(architecture, ndim):
    wrapper, patch = tiny_wrapper(ndim, architecture)
    wrapper.train()
    x = torch.randn(2, 1, *patch)
    segmentation, mi = wrapper(x)
    assert isinstance(mi, MIOutput) and bool(mi.finite) and mi.loss.ndim == 0
    plain = wrapper.segmentation_network(x)
    assert isinstance(segmentation, list) and len(segmentation) == len(plain) == 2
    for ours, theirs in zip(segmentation, plain):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("architecture", ["plain", "residual"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_eval_mode_is_the_plain_network(architecture, ndim):
    wrapper, patch = tiny_wrapper(ndim, architecture)
    plain = tiny_unet(ndim, architecture)  # an identical, separately built network
    calls = []
    wrapper.mi_head.register_forward_hook(lambda *args: calls.append(1))
    wrapper.eval()
    plain.eval()
    x = torch.randn(1, 1, *patch)
    with torch.no_grad():
        ours, theirs = wrapper(x), plain(x)
    assert type(ours) is type(theirs) and len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    assert not calls  # the MI head does not run at inference


def test_state_dict_is_the_plain_networks():
    wrapper, _ = tiny_wrapper(3)
    plain = tiny_unet(3)
    assert list(wrapper.state_dict().keys()) == list(plain.state_dict().keys())
    assert not any("mi_head" in key for key in wrapper.state_dict())
    for key, value in wrapper.state_dict().items():
        assert torch.equal(value, plain.state_dict()[key]), key
    # the MI head's parameters still train with the network
    assert set(wrapper.parameters()) == set(wrapper.segmentation_network.parameters()) | \
        set(wrapper.mi_head.parameters())


@pytest.mark.parametrize("ndim", [2, 3])
def test_load_state_dict_round_trip(ndim):
    source, patch = tiny_wrapper(ndim, seed=0)
    target, _ = tiny_wrapper(ndim, seed=1)
    x = torch.randn(1, 1, *patch)
    source.eval()
    target.eval()
    with torch.no_grad():
        assert not torch.equal(source(x)[0], target(x)[0])
        result = target.load_state_dict(source.state_dict())
        assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
        for a, b in zip(source(x), target(x)):
            assert torch.equal(a, b)
    # a plain network's checkpoint loads into the wrapper and vice versa
    plain = tiny_unet(ndim, seed=2)
    target.load_state_dict(plain.state_dict())
    source.segmentation_network.load_state_dict(target.state_dict())
    for key, value in plain.state_dict().items():
        assert torch.equal(source.state_dict()[key], value)
    with pytest.raises(RuntimeError, match=r"Unexpected key"):
        target.load_state_dict({**plain.state_dict(), "mi_head.critic.weight": torch.zeros(16, 1)})


def test_deep_supervision_toggles_through_the_wrapper():
    wrapper, patch = tiny_wrapper(2)
    assert wrapper.decoder is wrapper.segmentation_network.decoder
    assert wrapper.encoder is wrapper.segmentation_network.encoder
    x = torch.randn(2, 1, *patch)
    wrapper.decoder.deep_supervision = False
    assert wrapper.segmentation_network.decoder.deep_supervision is False
    segmentation, _ = wrapper.train()(x)
    assert isinstance(segmentation, torch.Tensor) and segmentation.shape == (2, 2, *patch)
    with torch.no_grad():
        assert isinstance(wrapper.eval()(x), torch.Tensor)
    wrapper.decoder.deep_supervision = True
    assert wrapper.segmentation_network.decoder.deep_supervision is True
    with torch.no_grad():
        assert isinstance(wrapper.eval()(x), list)


@pytest.mark.parametrize("view", ["interpolate", "patches"])
def test_mi_head_sees_only_the_image_channels(view):
    wrapper, patch = tiny_wrapper(2, input_channels=2, image_channels=1, view=view)
    seen = []
    wrapper.mi_head.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    x = torch.randn(2, 2, *patch)
    _, mi = wrapper.train()(x)
    assert bool(mi.finite)
    assert seen[0].shape == (2, 1, *patch) and torch.equal(seen[0], x[:, :1])
    # passing both channels to a head built for one fails, so the slicing above is what makes it work
    wrapper.image_channels = 2
    with pytest.raises(ValueError, match=r"built for 1 input channel"):
        wrapper(x)


@pytest.mark.parametrize("architecture", ["plain", "residual"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_mi_gradient_reaches_the_encoder_only_with_nonzero_weight(architecture, ndim):
    wrapper, patch = tiny_wrapper(ndim, architecture)
    wrapper.train()
    x = torch.randn(2, 1, *patch)
    encoder_weights = [p for name, p in wrapper.encoder.named_parameters() if p.ndim > 1]  # conv kernels
    assert encoder_weights

    for weight in (1.0, 0.0):
        wrapper.zero_grad(set_to_none=True)
        wrapper.mi_head.set_gradient_weight(weight)
        _, mi = wrapper(x)  # the segmentation output stays unused
        mi.loss.backward()
        for name, parameter in wrapper.encoder.named_parameters():
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
            if weight == 0.0:
                assert torch.count_nonzero(parameter.grad) == 0, name
        if weight == 1.0:
            for parameter in encoder_weights:
                assert parameter.grad.abs().sum() > 0
        # the decoder is not on the MI path; the critic always is
        assert all(p.grad is None for p in wrapper.decoder.parameters() if p not in set(wrapper.encoder.parameters()))
        for name, parameter in wrapper.mi_head.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------ torch.compile
def _loss_and_grads(network, x):
    torch.manual_seed(1)  # the same negatives in both runs
    output, mi = network(x)
    loss = sum(o.float().mean() for o in output) + mi.loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None}


def test_compiled_wrapper_matches_eager_and_keeps_nan_guards():
    """nnU-Net compiles the network on CUDA; the MI head's autograd function, gradient-weight buffer and parameter
    hooks must survive dynamo and AOTAutograd (the ``aot_eager`` backend runs both without a GPU compiler)."""
    import torch._dynamo
    torch._dynamo.reset()
    eager, patch = tiny_wrapper()
    compiled_source, _ = tiny_wrapper()
    compiled_source.load_state_dict(eager.state_dict())
    compiled_source.mi_head.load_state_dict(eager.mi_head.state_dict())
    compiled = torch.compile(compiled_source, backend="aot_eager")
    x = torch.randn(2, 1, *patch)
    for weight in (0.5, 0.0):  # a new weight must not need a new graph
        eager.zero_grad(set_to_none=True)
        compiled.zero_grad(set_to_none=True)
        eager.mi_head.set_gradient_weight(weight)
        compiled_source.mi_head.set_gradient_weight(weight)
        eager_loss, eager_grads = _loss_and_grads(eager, x)
        compiled_loss, compiled_grads = _loss_and_grads(compiled, x)
        torch.testing.assert_close(compiled_loss, eager_loss)
        assert eager_grads.keys() == {n.replace("_orig_mod.", "") for n in compiled_grads}
        for name, grad in compiled_grads.items():
            torch.testing.assert_close(grad, eager_grads[name.replace("_orig_mod.", "")], rtol=1e-4, atol=1e-6)
    compiled.zero_grad(set_to_none=True)
    poisoned = x.clone()
    poisoned[0, 0, 0, 0, 0] = float("nan")
    _, mi = compiled(poisoned)
    mi.loss.backward()
    assert not mi.finite and mi.loss.item() == 0.0
    assert all(torch.isfinite(p.grad).all() for p in compiled_source.mi_head.parameters())
    compiled.eval()
    with torch.no_grad():
        assert isinstance(compiled(x), list)  # eval mode: the segmentation alone
