"""DistributedDataParallel over ``MIRegularisedNetwork``: two gloo processes on CPU.

Each rank feeds different data. DDP with its defaults (``find_unused_parameters=False``) must find a gradient for
every parameter, MI head included, and all-reduce them, so both ranks end with identical gradients that are the
mean of what each rank's data gives on its own.
"""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from nnunetv2_imnet.mi.config import MIConfig
from nnunetv2_imnet.mi.head import build_mi_head
from nnunetv2_imnet.training.network import MIRegularisedNetwork, find_bottleneck
from nnunetv2_imnet.training.unlabelled_loader import rank_batch_size

pytestmark = pytest.mark.usefixtures("single_thread")

WORLD_SIZE = 2
ITERATIONS = 2
PATCH = (8, 8, 8)


def _build_network(seed: int = 0) -> MIRegularisedNetwork:
    torch.manual_seed(seed)
    network = PlainConvUNet(
        input_channels=1, n_stages=3, features_per_stage=[4, 8, 16], conv_op=nn.Conv3d, kernel_sizes=3,
        strides=[1, 2, 2], n_conv_per_stage=1, num_classes=2, n_conv_per_stage_decoder=1, conv_bias=True,
        norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=True)
    bottleneck = find_bottleneck(network, 1, PATCH)
    config = MIConfig(critic="concat", critic_hidden_channels=8, embedding_channels=4, batch_negatives=1,
                      location_negatives=3)
    head = build_mi_head(config, bottleneck.channels, 1, bottleneck.stride)
    head.set_gradient_weight(0.5)
    return MIRegularisedNetwork(network, head, image_channels=1)


def _data(rank: int, iteration: int) -> torch.Tensor:
    return torch.randn(2, 1, *PATCH, generator=torch.Generator().manual_seed(1000 * rank + iteration))


def _sampler_seed(rank: int, iteration: int) -> int:
    return 77 + 10 * rank + iteration


def _unlabelled(rank: int, iteration: int, with_unlabelled: bool):
    """Each rank's share of the unlabelled patches (none where the run has no unlabelled images)."""
    if not with_unlabelled:
        return None
    return torch.randn(rank_batch_size(3, WORLD_SIZE, rank), 1, *PATCH,
                       generator=torch.Generator().manual_seed(5000 + 1000 * rank + iteration))


def _loss(model: nn.Module, rank: int, iteration: int, with_unlabelled: bool) -> torch.Tensor:
    x = _data(rank, iteration)
    torch.manual_seed(_sampler_seed(rank, iteration))  # the MI head draws its negatives from the global RNG
    segmentation, mi = model(x, _unlabelled(rank, iteration, with_unlabelled))
    assert bool(mi.finite)
    # every deep-supervision output enters the loss, as nnU-Net's deep-supervision loss does: an output left out
    # would leave its seg layer without a gradient, which DDP (find_unused_parameters=False) rejects by design
    return sum(output.mean() for output in segmentation) + mi.loss


def _gradients(network: MIRegularisedNetwork):
    return {
        "mi_head": {name: p.grad.detach().clone() for name, p in network.mi_head.named_parameters()},
        "network": {name: p.grad.detach().clone() for name, p in network.segmentation_network.named_parameters()},
    }




def _worker(rank: int, port: int, out_dir: str, with_unlabelled: bool) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        network = _build_network(seed=0)
        model = DistributedDataParallel(network)  # default settings: find_unused_parameters=False
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        gradients = []
        for iteration in range(ITERATIONS):
            optimizer.zero_grad(set_to_none=True)
            _loss(model, rank, iteration, with_unlabelled).backward()
            gradients.append(_gradients(network))
            optimizer.step()
        torch.save(gradients, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single_process_gradients(rank: int, with_unlabelled: bool):
    network = _build_network(seed=0).train()
    _loss(network, rank, 0, with_unlabelled).backward()
    return _gradients(network)


@pytest.mark.parametrize("with_unlabelled", [False, True], ids=["labelled", "with_unlabelled_patches"])
def test_ddp_gradients_are_synchronised(tmp_path, with_unlabelled):
    """Also with unlabelled patches (3 split 2 + 1 over the ranks, as nnU-Net splits a batch)."""
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), with_unlabelled), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]
    assert all(len(r) == ITERATIONS for r in ranks)

    for iteration in range(ITERATIONS):
        first, second = ranks[0][iteration], ranks[1][iteration]
        for part in ("mi_head", "network"):
            assert first[part].keys() == second[part].keys()
            for name in first[part]:
                assert torch.equal(first[part][name], second[part][name]), (iteration, part, name)
        for name, grad in first["mi_head"].items():
            assert grad.abs().sum() > 0, (iteration, name)
        # the MI term reached the encoder through DDP: the bottleneck conv has a gradient
        assert any(g.abs().sum() > 0 for n, g in first["network"].items() if n.startswith("encoder.stages.2"))

    # each rank alone gives a different MI-head gradient; DDP's is the mean of the two
    alone = [_single_process_gradients(rank, with_unlabelled) for rank in range(WORLD_SIZE)]
    synchronised = ranks[0][0]
    assert any(not torch.equal(alone[0]["mi_head"][name], synchronised["mi_head"][name])
               for name in synchronised["mi_head"])
    assert any(not torch.equal(alone[0]["mi_head"][name], alone[1]["mi_head"][name])
               for name in synchronised["mi_head"])
    for part in ("mi_head", "network"):
        for name, grad in synchronised[part].items():
            mean = (alone[0][part][name] + alone[1][part][name]) / 2
            torch.testing.assert_close(grad, mean, rtol=1e-4, atol=1e-6, msg=f"{part}.{name}")
