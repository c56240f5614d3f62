"""Views, critics, negative sampling, configuration and the MI head (``nnunetv2_imnet.mi``)."""
from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_imnet.mi.config import CRITICS, VIEWS, MIConfig
from nnunetv2_imnet.mi.critics import BilinearCritic, ConcatCritic, gather_candidates
from nnunetv2_imnet.mi.estimators import ESTIMATORS
from nnunetv2_imnet.mi.head import MIHead, MIOutput, build_mi_head, warmup_weight
from nnunetv2_imnet.mi.negatives import NegativeSampler
from nnunetv2_imnet.mi.views import InterpolateView, PatchView, PointwiseEmbedding, space_to_depth

pytestmark = pytest.mark.usefixtures("single_thread")




def _reference_space_to_depth(image, factor):
    """Loop implementation: channel ``c * prod(f) + flat(offset)`` at grid cell ``g`` is
    ``image[c, g * f + offset]``."""
    batch, channels, *spatial = image.shape
    grid = [s // f for s, f in zip(spatial, factor)]
    out = torch.empty(batch, channels * math.prod(factor), *grid, dtype=image.dtype)
    offsets = list(itertools.product(*[range(f) for f in factor]))
    for c in range(channels):
        for k, offset in enumerate(offsets):
            for cell in itertools.product(*[range(g) for g in grid]):
                source = tuple(g * f + o for g, f, o in zip(cell, factor, offset))
                out[(slice(None), c * len(offsets) + k) + cell] = image[(slice(None), c) + source]
    return out


# ================================================================================================ space_to_depth
def test_space_to_depth_known_values_2d():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = space_to_depth(image, (2, 2))
    assert out.shape == (1, 4, 2, 2)
    # every output location holds its 2x2 input block in row-major order
    assert out[0, :, 0, 0].tolist() == [0, 1, 4, 5]
    assert out[0, :, 0, 1].tolist() == [2, 3, 6, 7]
    assert out[0, :, 1, 0].tolist() == [8, 9, 12, 13]
    assert out[0, :, 1, 1].tolist() == [10, 11, 14, 15]


def test_space_to_depth_known_values_two_channels_non_square_factor():
    image = torch.arange(2 * 2 * 6, dtype=torch.float32).reshape(1, 2, 2, 6)
    out = space_to_depth(image, (1, 3))
    assert out.shape == (1, 6, 2, 2)
    # channel-major: the three channel-0 block entries first, then channel 1's
    assert out[0, :, 0, 0].tolist() == [0, 1, 2, 12, 13, 14]
    assert out[0, :, 0, 1].tolist() == [3, 4, 5, 15, 16, 17]
    assert out[0, :, 1, 0].tolist() == [6, 7, 8, 18, 19, 20]
    assert out[0, :, 1, 1].tolist() == [9, 10, 11, 21, 22, 23]


@pytest.mark.parametrize("shape, factor", [
    ((2, 3, 6, 4), (3, 2)),
    ((1, 1, 4, 4), (1, 1)),
    ((2, 2, 4, 6, 2), (2, 3, 1)),
    ((1, 3, 4, 4, 4), (2, 2, 2)),
])
def test_space_to_depth_matches_loop_reference(shape, factor):
    image = torch.randn(*shape)
    out = space_to_depth(image, factor)
    expected_shape = (shape[0], shape[1] * math.prod(factor), *[s // f for s, f in zip(shape[2:], factor)])
    assert out.shape == expected_shape
    assert torch.equal(out, _reference_space_to_depth(image, factor))


def test_space_to_depth_3d_shape():
    out = space_to_depth(torch.randn(2, 3, 8, 12, 4), (2, 4, 4))
    assert out.shape == (2, 3 * 32, 4, 3, 1)


@pytest.mark.parametrize("shape, factor", [((1, 1, 4, 4), (3, 2)), ((1, 2, 4, 6, 8), (2, 4, 2)),
                                           ((1, 1, 5, 4), (2, 2))])
def test_space_to_depth_rejects_non_divisible_sizes(shape, factor):
    with pytest.raises(ValueError, match=r"is not divisible by the block"):
        space_to_depth(torch.zeros(shape), factor)


@pytest.mark.parametrize("shape, factor", [((1, 1, 4, 4), (2,)), ((1, 1, 4, 4), (2, 2, 2)),
                                           ((1, 1, 4, 4, 4), (2, 2))])
def test_space_to_depth_rejects_wrong_number_of_axes(shape, factor):
    with pytest.raises(ValueError, match=rf"has {len(factor)} axes but the image has {len(shape) - 2} spatial"):
        space_to_depth(torch.zeros(shape), factor)


# ================================================================================================ InterpolateView
@pytest.mark.parametrize("mode", ["linear", "area"])
@pytest.mark.parametrize("spatial, grid", [((16, 12), (4, 3)), ((8, 16, 12), (2, 4, 3)), ((10, 10), (3, 7))])
def test_interpolate_view_shapes(mode, spatial, grid):
    view = InterpolateView(2, mode)
    assert view.in_channels == view.out_channels == 2
    out = view(torch.randn(3, 2, *spatial), grid)
    assert out.shape == (3, 2, *grid)


@pytest.mark.parametrize("block", [(2, 2), (4, 2), (2, 2, 2), (1, 4, 2)])
def test_interpolate_view_area_reproduces_block_means(block):
    generator = torch.Generator().manual_seed(0)
    grid = (3,) * len(block)
    values = torch.randint(-50, 50, (2, 1, *grid), generator=generator).float()
    image = values
    for axis, factor in enumerate(block):
        image = image.repeat_interleave(factor, dim=2 + axis)
    view = InterpolateView(1, "area")
    assert torch.equal(view(image, grid), values)  # integer blocks: the mean is exact

    noisy = torch.randn(2, 1, *[g * f for g, f in zip(grid, block)], generator=generator)
    interleaved = [v for g, f in zip(grid, block) for v in (g, f)]
    block_axes = tuple(3 + 2 * i for i in range(len(block)))
    means = noisy.reshape(2, 1, *interleaved).mean(dim=block_axes)
    torch.testing.assert_close(view(noisy, grid), means)


@pytest.mark.parametrize("spatial", [(6, 8), (4, 6, 8)])
def test_interpolate_view_linear_identity_and_constant(spatial):
    view = InterpolateView(1, "linear")
    image = torch.randn(2, 1, *spatial)
    torch.testing.assert_close(view(image, spatial), image)  # same size: no resampling
    constant = torch.full((2, 1, *spatial), 2.5)
    torch.testing.assert_close(view(constant, [s // 2 for s in spatial]),
                               torch.full((2, 1, *[s // 2 for s in spatial]), 2.5))


@pytest.mark.parametrize("mode", ["linear", "area"])
def test_interpolate_view_rejects_wrong_channels_and_dims(mode):
    view = InterpolateView(1, mode)
    with pytest.raises(ValueError, match=r"built for 1 input channel\(s\)"):
        view(torch.randn(2, 3, 8, 8), (4, 4))
    with pytest.raises(ValueError, match=r"3D inputs"):
        view(torch.randn(2, 1, 8, 8), (2, 2, 2))


def test_interpolate_view_rejects_unknown_mode():
    with pytest.raises(ValueError, match=r"Unknown interpolation mode 'nearest'"):
        InterpolateView(1, "nearest")


# ================================================================================================ PatchView
@pytest.mark.parametrize("channels, factor, grid", [(1, (2, 2), (3, 4)), (2, (4, 2), (2, 2)),
                                                    (1, (2, 2, 2), (2, 3, 2)), (3, (1, 2, 4), (2, 2, 1))])
def test_patch_view_channels_and_values(channels, factor, grid):
    view = PatchView(channels, factor)
    assert view.in_channels == channels
    assert view.out_channels == channels * math.prod(factor)
    image = torch.randn(2, channels, *[g * f for g, f in zip(grid, factor)])
    out = view(image, grid)
    assert out.shape == (2, view.out_channels, *grid)
    assert torch.equal(out, space_to_depth(image, factor))


@pytest.mark.parametrize("spatial, grid", [((8, 8), (3, 4)), ((8, 8), (2, 4)), ((8, 8, 8), (4, 4, 2))])
def test_patch_view_rejects_mismatched_grid(spatial, grid):
    view = PatchView(1, (2,) * len(spatial))
    with pytest.raises(ValueError, match=r"is not the bottleneck grid"):
        view(torch.randn(1, 1, *spatial), grid)


def test_patch_view_rejects_bad_factor_and_channels():
    with pytest.raises(ValueError, match=r"positive stride"):
        PatchView(1, (2, 0))
    with pytest.raises(ValueError, match=r"positive stride"):
        PatchView(1, ())
    with pytest.raises(ValueError, match=r"built for 1 input channel"):
        PatchView(1, (2, 2))(torch.randn(1, 2, 4, 4), (2, 2))


# ================================================================================================ PointwiseEmbedding
@pytest.mark.parametrize("inner", ["interpolate", "patches"])
@pytest.mark.parametrize("grid", [(3, 2), (2, 3, 2)])
def test_pointwise_embedding_shapes_and_per_location_mlp(inner, grid):
    factor = (2,) * len(grid)
    view = InterpolateView(2, "area") if inner == "interpolate" else PatchView(2, factor)
    embedded = PointwiseEmbedding(view, 5)
    assert (embedded.in_channels, embedded.out_channels) == (2, 5)
    assert embedded.mlp[0].in_features == view.out_channels
    image = torch.randn(3, 2, *[g * f for g, f in zip(grid, factor)])
    out = embedded(image, grid)
    assert out.shape == (3, 5, *grid)
    viewed = view(image, grid)
    location = (1, slice(None)) + tuple(g - 1 for g in grid)
    torch.testing.assert_close(out[location], embedded.mlp(viewed[location]))


def test_pointwise_embedding_rejects_zero_channels():
    with pytest.raises(ValueError, match=r"Embedding channels must be >= 1, got 0"):
        PointwiseEmbedding(InterpolateView(1), 0)


# ================================================================================================ critics
def _critic_inputs(spatial, feature_channels=5, view_channels=3, batch=2, num_candidates=4, seed=0):
    """Location-major tensors derived from 2D/3D maps, as the MI head builds them."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, feature_channels, *spatial, generator=generator).flatten(2).transpose(1, 2)
    views = torch.randn(batch, view_channels, *spatial, generator=generator).flatten(2).transpose(1, 2)
    num_locations = math.prod(spatial)
    candidates = torch.randint(0, batch * num_locations, (batch, num_locations, num_candidates), generator=generator)
    return features, views, candidates


@pytest.mark.parametrize("spatial", [(3, 4), (2, 3, 2)])
def test_gather_candidates(spatial):
    _, views, candidates = _critic_inputs(spatial)
    gathered = gather_candidates(views, candidates)
    assert gathered.shape == (*candidates.shape, views.shape[-1])
    b, n, k = 1, 2, 3
    flat = candidates[b, n, k].item()
    assert torch.equal(gathered[b, n, k], views[flat // views.shape[1], flat % views.shape[1]])


@pytest.mark.parametrize("spatial", [(3, 4), (2, 3, 2)])
def test_bilinear_critic_matches_manual_formula(spatial):
    features, views, candidates = _critic_inputs(spatial)
    critic = BilinearCritic(5, 3)
    with torch.no_grad():
        critic.bias.fill_(0.3)
    scores = critic(features, views, candidates)
    assert scores.shape == candidates.shape
    num_locations = views.shape[1]
    for b, n, k in [(0, 0, 0), (1, num_locations - 1, 3), (1, 2, 1)]:
        flat = candidates[b, n, k].item()
        g = views[flat // num_locations, flat % num_locations]
        expected = features[b, n] @ critic.weight @ g + 0.3
        torch.testing.assert_close(scores[b, n, k], expected)


@pytest.mark.parametrize("spatial", [(3, 4), (2, 3, 2)])
@pytest.mark.parametrize("hidden", [1, 7])
def test_concat_critic_matches_mlp_on_concatenation(spatial, hidden):
    features, views, candidates = _critic_inputs(spatial)
    critic = ConcatCritic(5, 3, hidden_channels=hidden)
    scores = critic(features, views, candidates)
    assert scores.shape == candidates.shape
    first = torch.cat([critic.feature_in.weight, critic.view_in.weight], dim=1)  # the layer on [f, g]
    num_locations = views.shape[1]
    for b, n, k in [(0, 0, 0), (1, num_locations - 1, 3), (0, 2, 2)]:
        flat = candidates[b, n, k].item()
        pair = torch.cat([features[b, n], views[flat // num_locations, flat % num_locations]])
        hidden_activation = F.leaky_relu(first @ pair + critic.feature_in.bias, 0.01)
        expected = critic.out.weight @ hidden_activation + critic.out.bias
        torch.testing.assert_close(scores[b, n, k], expected.squeeze())


def test_concat_critic_rejects_zero_hidden_channels():
    with pytest.raises(ValueError, match=r"hidden_channels must be >= 1, got 0"):
        ConcatCritic(4, 4, hidden_channels=0)


# ================================================================================================ NegativeSampler
def _decompose(candidates, num_locations):
    return candidates // num_locations, candidates % num_locations


@pytest.mark.parametrize("batch_size, num_locations, batch_negatives, location_negatives", [
    (2, 2, 3, 3), (3, 5, 4, 6), (4, 1, 5, 2), (5, 7, 0, 3), (3, 4, 2, 0),
])
def test_negative_sampler_structure(batch_size, num_locations, batch_negatives, location_negatives):
    sampler = NegativeSampler(batch_negatives, location_negatives)
    generator = torch.Generator().manual_seed(0)
    from_batch = batch_negatives if batch_size > 1 else 0
    from_locations = location_negatives if num_locations > 1 else 0
    assert sampler.num_negatives(batch_size, num_locations) == from_batch + from_locations
    images = torch.arange(batch_size).view(-1, 1)
    locations = torch.arange(num_locations).view(1, -1)
    seen_images, seen_locations = set(), set()
    for _ in range(30):
        candidates = sampler(batch_size, num_locations, torch.device("cpu"), generator=generator)
        assert candidates.shape == (batch_size, num_locations, 1 + from_batch + from_locations)
        assert candidates.dtype == torch.int64
        assert candidates.min() >= 0 and candidates.max() < batch_size * num_locations
        image, location = _decompose(candidates, num_locations)
        # column 0: the anchor's own view
        assert torch.equal(candidates[..., 0], images * num_locations + locations)
        # batch negatives: another image, the same location
        bi, bl = image[..., 1:1 + from_batch], location[..., 1:1 + from_batch]
        assert (bi != images.unsqueeze(-1)).all()
        assert (bl == locations.unsqueeze(-1)).all()
        # location negatives: the same image, another location
        li, ll = image[..., 1 + from_batch:], location[..., 1 + from_batch:]
        assert (li == images.unsqueeze(-1)).all()
        assert (ll != locations.unsqueeze(-1)).all()
        seen_images.update(((bi - images.unsqueeze(-1)) % batch_size).flatten().tolist())
        seen_locations.update(((ll - locations.unsqueeze(-1)) % num_locations).flatten().tolist())
    # every other image and every other location is drawn (no off-by-one in the shifts)
    if from_batch:
        assert seen_images == set(range(1, batch_size))
    if from_locations:
        assert seen_locations == set(range(1, num_locations))


def test_negative_sampler_batch_size_one_gives_only_location_negatives():
    sampler = NegativeSampler(batch_negatives=5, location_negatives=3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        candidates = sampler(1, 6, torch.device("cpu"), generator=generator)
        assert candidates.shape == (1, 6, 4)
        assert torch.equal(candidates[0, :, 0], torch.arange(6))
        assert (candidates[0, :, 1:] != torch.arange(6).view(-1, 1)).all()
        assert (candidates < 6).all()


def test_negative_sampler_is_reproducible_with_a_generator():
    sampler = NegativeSampler(3, 3)
    first = sampler(3, 8, torch.device("cpu"), generator=torch.Generator().manual_seed(7))
    second = sampler(3, 8, torch.device("cpu"), generator=torch.Generator().manual_seed(7))
    third = sampler(3, 8, torch.device("cpu"), generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


@pytest.mark.parametrize("batch_negatives, location_negatives, batch_size, num_locations", [
    (8, 8, 1, 1), (4, 0, 1, 10), (0, 4, 3, 1),
])
def test_negative_sampler_raises_when_no_negatives_are_possible(batch_negatives, location_negatives, batch_size,
                                                                num_locations):
    sampler = NegativeSampler(batch_negatives, location_negatives)
    assert sampler.num_negatives(batch_size, num_locations) == 0
    with pytest.raises(ValueError, match=rf"No negative pairs are possible with batch size {batch_size} and "
                                         rf"{num_locations} bottleneck"):
        sampler(batch_size, num_locations, torch.device("cpu"))


def test_negative_sampler_num_negatives():
    sampler = NegativeSampler(batch_negatives=8, location_negatives=6)
    assert sampler.num_negatives(2, 4) == 14
    assert sampler.num_negatives(1, 4) == 6
    assert sampler.num_negatives(2, 1) == 8
    assert sampler.num_negatives(1, 1) == 0
    assert NegativeSampler().num_negatives(4, 64) == 16


@pytest.mark.parametrize("batch_negatives, location_negatives", [(-1, 8), (8, -1), (-2, -2)])
def test_negative_sampler_rejects_negative_counts(batch_negatives, location_negatives):
    with pytest.raises(ValueError, match=rf"must be >= 0, got batch_negatives={batch_negatives}, "
                                         rf"location_negatives={location_negatives}"):
        NegativeSampler(batch_negatives, location_negatives)


def test_negative_sampler_rejects_both_zero():
    with pytest.raises(ValueError, match=r"both 0"):
        NegativeSampler(0, 0)


# ================================================================================================ MIConfig
BAD_OPTIONS = [
    ("view", "pixels"), ("view", None), ("interpolation", "nearest"), ("interpolation", "bilinear"),
    ("critic", "dot"), ("estimator", "mine"), ("estimator", "JSD"),
    ("weight", -1.0), ("weight", float("nan")), ("weight", 1000.0), ("weight", float("inf")), ("weight", "0.1"),
    ("weight", True),
    ("temperature", 0.0), ("temperature", -1.0), ("temperature", 0), ("temperature", float("nan")),
    ("warmup_fraction", 1.5), ("warmup_fraction", -0.1),
    ("embedding_channels", 2.5), ("embedding_channels", -1), ("embedding_channels", "16"),
    ("critic_hidden_channels", 0), ("critic_hidden_channels", 64.0), ("batch_negatives", -1),
    ("batch_negatives", 4.0), ("location_negatives", True), ("max_consecutive_nonfinite", 0),
]


@pytest.mark.parametrize("name, value", BAD_OPTIONS, ids=[f"{n}={v!r}" for n, v in BAD_OPTIONS])
def test_config_validate_names_the_bad_option_and_value(name, value):
    config = MIConfig(**{name: value})
    with pytest.raises(ValueError, match=re.escape(f"{name}={value!r}")):
        config.validate()


def test_config_validate_rejects_no_negatives():
    with pytest.raises(ValueError, match=r"batch_negatives and location_negatives are both 0"):
        MIConfig(batch_negatives=0, location_negatives=0).validate()


@pytest.mark.parametrize("changes", [
    {}, {"weight": 0.0}, {"weight": 100.0}, {"weight": 1}, {"temperature": 100.0}, {"temperature": 0.5},
    {"warmup_fraction": 0.0}, {"warmup_fraction": 1.0}, {"batch_negatives": 0}, {"location_negatives": 0},
    {"view": "patches", "embedding_channels": 32}, {"critic": "concat", "estimator": "dv"},
    {"interpolation": "area", "estimator": "infonce"},
])
def test_config_valid_values(changes):
    config = MIConfig(**changes)
    assert config.validate() is config


def test_config_defaults():
    config = MIConfig()
    assert config.validate() is config
    assert (config.view, config.interpolation, config.critic, config.estimator) == \
        ("interpolate", "linear", "bilinear", "jsd")
    assert config.view in VIEWS and config.critic in CRITICS and config.estimator in ESTIMATORS


def test_config_dict_round_trip_and_unknown_keys():
    config = MIConfig(weight=0.5, estimator="infonce", embedding_channels=8)
    assert MIConfig.from_dict(config.as_dict()) == config
    assert MIConfig.from_dict({"critic": "concat"}).critic == "concat"
    with pytest.raises(ValueError, match=r"Unknown MI option\(s\) \['lambda', 'negatives'\]"):
        MIConfig.from_dict({"weight": 0.2, "lambda": 0.1, "negatives": 4})


# ================================================================================================ MI head
HEAD_COMBINATIONS = list(itertools.product(VIEWS, CRITICS, sorted(ESTIMATORS), (2, 3), (0, 16)))
SHIFT_INVARIANT_BIASES = {"critic.bias", "critic.out.bias"}  # cancel in infonce / dv, so their gradient is 0


def _head_inputs(ndim, feature_channels=6, image_channels=1, batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    grid = (3, 2) if ndim == 2 else (2, 3, 2)
    stride = (2,) * ndim
    features = torch.randn(batch, feature_channels, *grid, generator=generator)
    image = torch.randn(batch, image_channels, *[g * s for g, s in zip(grid, stride)], generator=generator)
    return features, image, stride


@pytest.mark.parametrize("view, critic, estimator, ndim, embedding", HEAD_COMBINATIONS)
def test_mi_head_every_combination(view, critic, estimator, ndim, embedding):
    config = MIConfig(view=view, critic=critic, estimator=estimator, embedding_channels=embedding,
                      critic_hidden_channels=8, batch_negatives=2, location_negatives=3)
    features, image, stride = _head_inputs(ndim)
    head = build_mi_head(config, feature_channels=6, image_channels=1, stride=stride)
    assert isinstance(head.view, PointwiseEmbedding if embedding else (InterpolateView if view == "interpolate"
                                                                      else PatchView))
    assert isinstance(head.critic, BilinearCritic if critic == "bilinear" else ConcatCritic)
    assert head.estimator is ESTIMATORS[estimator]

    features.requires_grad_(True)
    output = head(features, image)
    assert isinstance(output, MIOutput)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    assert output.finite.dtype == torch.bool and bool(output.finite)
    assert torch.isfinite(output.estimate) and not output.estimate.requires_grad
    assert output.max_abs_score > 0
    if estimator == "jsd":
        torch.testing.assert_close(output.estimate, math.log(2) - output.loss.detach())
    elif estimator == "infonce":
        torch.testing.assert_close(output.estimate, math.log(1 + 2 + 3) - output.loss.detach())
    else:
        torch.testing.assert_close(output.estimate, -output.loss.detach())

    output.loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        if estimator in ("infonce", "dv") and name in SHIFT_INVARIANT_BIASES:
            assert parameter.grad.abs().max() < 1e-5, name
        else:
            assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("interpolation", ["linear", "area"])
def test_build_mi_head_passes_options(interpolation):
    config = MIConfig(interpolation=interpolation, temperature=2.0, batch_negatives=3, location_negatives=5,
                      critic="concat", critic_hidden_channels=11)
    head = build_mi_head(config, feature_channels=4, image_channels=2, stride=(2, 2))
    assert head.view.mode == interpolation and head.view.in_channels == 2
    assert head.critic.feature_in.out_features == 11
    assert (head.sampler.batch_negatives, head.sampler.location_negatives) == (3, 5)
    assert head.temperature == 2.0
    patches = build_mi_head(MIConfig(view="patches"), feature_channels=4, image_channels=2, stride=(2, 4, 1))
    assert patches.view.factor == (2, 4, 1) and patches.critic.weight.shape == (4, 16)


def test_build_mi_head_validates_config():
    with pytest.raises(ValueError, match=r"estimator='mine'"):
        build_mi_head(MIConfig(estimator="mine"), 4, 1, (2, 2))


def test_mi_head_temperature_divides_scores():
    features, image, stride = _head_inputs(2)
    heads = []
    for temperature in (1.0, 4.0):
        torch.manual_seed(0)
        heads.append(build_mi_head(MIConfig(temperature=temperature), 6, 1, stride))
    outputs = []
    for head in heads:
        torch.manual_seed(3)
        outputs.append(head(features, image))
    assert torch.equal(heads[0].critic.weight, heads[1].critic.weight)
    torch.testing.assert_close(outputs[1].max_abs_score, outputs[0].max_abs_score / 4)
    assert outputs[1].loss != outputs[0].loss


@pytest.mark.parametrize("critic", CRITICS)
@pytest.mark.parametrize("ndim", [2, 3])
def test_gradient_weight_scales_only_the_feature_gradient(critic, ndim):
    torch.manual_seed(0)
    head = build_mi_head(MIConfig(critic=critic, critic_hidden_channels=8, embedding_channels=4), 6, 1, (2,) * ndim)
    features, image, _ = _head_inputs(ndim)

    def gradients(weight):
        head.zero_grad(set_to_none=True)
        head.set_gradient_weight(weight)
        leaf = features.clone().requires_grad_(True)
        torch.manual_seed(123)  # the same negatives for every weight
        head(leaf, image).loss.backward()
        return leaf.grad, {name: p.grad.clone() for name, p in head.named_parameters()}

    reference_features, reference_params = gradients(1.0)
    assert reference_features.abs().sum() > 0
    for weight in (0.5, 0.1, 3.0, 0.0):
        feature_grad, param_grads = gradients(weight)
        weight32 = torch.tensor(weight, dtype=torch.float32)  # the buffer holds lambda in fp32
        assert torch.equal(head.gradient_weight, weight32)
        assert torch.equal(feature_grad, reference_features * weight32)
        for name, grad in param_grads.items():  # the critic always trains at full strength
            assert torch.equal(grad, reference_params[name]), name
    feature_grad, param_grads = gradients(0.0)
    assert torch.count_nonzero(feature_grad) == 0
    for name, grad in param_grads.items():  # jsd: every critic parameter, the bias included, still learns
        assert grad.abs().sum() > 0, name


def test_gradient_weight_is_a_non_persistent_buffer():
    head = build_mi_head(MIConfig(), 6, 1, (2, 2))
    head.set_gradient_weight(0.25)
    assert "gradient_weight" not in head.state_dict()
    assert dict(head.named_buffers())["gradient_weight"].item() == 0.25


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
@pytest.mark.parametrize("critic", CRITICS)
def test_mi_head_non_finite_features(bad, estimator, critic):
    torch.manual_seed(0)
    head = build_mi_head(MIConfig(estimator=estimator, critic=critic, critic_hidden_channels=8,
                                  embedding_channels=4), 6, 1, (2, 2))
    features, image, _ = _head_inputs(2)
    features[0, 1, 2, 1] = bad
    features.requires_grad_(True)
    output = head(features, image)
    assert not bool(output.finite)
    assert output.loss.item() == 0.0
    output.loss.backward()
    assert torch.isfinite(features.grad).all() and torch.count_nonzero(features.grad) == 0
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert torch.count_nonzero(parameter.grad) == 0, name


@pytest.mark.parametrize("features_shape, image_shape", [
    ((2, 6, 4), (2, 1, 8)),  # 1D: not supported
    ((2, 6, 3, 2), (3, 1, 6, 4)),  # batch mismatch
    ((2, 6, 3, 2), (2, 1, 6, 4, 2)),  # 2D features, 3D image
    ((2, 6, 2, 2, 2, 2), (2, 1, 4, 4, 4, 4)),  # 4D
])
def test_mi_head_rejects_bad_shapes(features_shape, image_shape):
    head = build_mi_head(MIConfig(), 6, 1, (2, 2))
    with pytest.raises(ValueError, match=r"MIHead expects features \(B, C, \*S\)"):
        head(torch.randn(features_shape), torch.randn(image_shape))


def test_mi_head_rejects_wrong_image_channels_and_unknown_estimator():
    head = build_mi_head(MIConfig(), 6, 1, (2, 2))
    features, _, _ = _head_inputs(2)
    with pytest.raises(ValueError, match=r"built for 1 input channel"):
        head(features, torch.randn(2, 2, 6, 4))
    with pytest.raises(ValueError, match=r"Unknown estimator 'mine'"):
        MIHead(InterpolateView(1), BilinearCritic(6, 1), "mine", NegativeSampler())


def test_mi_head_batch_size_one_uses_location_negatives():
    head = build_mi_head(MIConfig(estimator="infonce", batch_negatives=4, location_negatives=3), 6, 1, (2, 2))
    features, image, _ = _head_inputs(2, batch=1)
    torch.manual_seed(0)
    output = head(features, image)
    # infonce's estimate is log(1 + K) - loss with K = 3 location negatives only
    torch.testing.assert_close(output.estimate, math.log(4) - output.loss)


# ================================================================================================ warmup
def test_warmup_weight_known_values():
    config = MIConfig(weight=0.2, warmup_fraction=0.1)
    assert warmup_weight(config, 0, 1000) == 0.0
    assert warmup_weight(config, 50, 1000) == pytest.approx(0.1)
    assert warmup_weight(config, 25, 1000) == pytest.approx(0.05)
    assert warmup_weight(config, 100, 1000) == pytest.approx(0.2)
    assert warmup_weight(config, 999, 1000) == pytest.approx(0.2)
    assert warmup_weight(config, 5000, 1000) == pytest.approx(0.2)


@pytest.mark.parametrize("iteration", [0, 1, 500])
def test_warmup_weight_without_warmup(iteration):
    assert warmup_weight(MIConfig(weight=0.3, warmup_fraction=0.0), iteration, 1000) == 0.3
    assert warmup_weight(MIConfig(weight=0.3, warmup_fraction=0.5), iteration, 0) == 0.3


def test_warmup_weight_full_length_warmup():
    config = MIConfig(weight=1.0, warmup_fraction=1.0)
    assert warmup_weight(config, 250, 1000) == pytest.approx(0.25)
    assert warmup_weight(config, 1000, 1000) == 1.0


@pytest.mark.parametrize("critic", CRITICS)
def test_mi_head_computes_in_fp32_under_autocast(critic):
    """nnU-Net trains under autocast; the head must score in fp32 whatever precision the encoder hands it
    (CPU bfloat16 autocast stands in for CUDA fp16 here, which this machine cannot run)."""
    torch.manual_seed(0)
    config = MIConfig(critic=critic, critic_hidden_channels=8, batch_negatives=1, location_negatives=3)
    head = build_mi_head(config, feature_channels=6, image_channels=1, stride=(2, 2, 2))
    features = torch.randn(2, 6, 2, 3, 2).to(torch.bfloat16)
    image = torch.randn(2, 1, 4, 6, 4)
    seen_dtypes = []
    head.critic.register_forward_hook(lambda module, inputs, output: seen_dtypes.append(output.dtype))
    generator_state = torch.get_rng_state()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = head(features, image)
    torch.set_rng_state(generator_state)  # the same negatives
    reference = head(features.float(), image)
    assert seen_dtypes == [torch.float32, torch.float32]
    assert under_autocast.loss.dtype == torch.float32
    torch.testing.assert_close(under_autocast.loss, reference.loss)
    torch.testing.assert_close(under_autocast.estimate, reference.estimate)
