"""The training-time network: an nnU-Net segmentation network plus the MI head, as one module.

Putting the MI head inside the module that nnU-Net compiles and wraps in DDP is what makes the MI term safe
there: the MI head is compiled with the network, its gradients are all-reduced with the network's, and the
encoder's gradient bookkeeping goes through DDP's forward rather than around it.
"""
from __future__ import annotations

import copy
import math
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from nnunetv2_imnet.mi.head import MIHead, MIOutput


class Bottleneck(NamedTuple):
    channels: int
    grid: Tuple[int, ...]
    stride: Tuple[int, ...]

    @property
    def num_locations(self) -> int:
        return math.prod(self.grid)


def find_bottleneck(network: nn.Module, input_channels: int, patch_size: Sequence[int]) -> Bottleneck:
    """Return the bottleneck ``network.encoder(x)[-1]`` has for an input of ``patch_size``.

    Shapes are inferred on the meta device, so this costs no compute even for large 3D patches. Raises a
    ``TypeError`` that says what is missing when the architecture has no encoder/decoder split to hook into.
    """
    name = type(network).__name__
    if not isinstance(getattr(network, "encoder", None), nn.Module) or \
            not isinstance(getattr(network, "decoder", None), nn.Module):
        raise TypeError(
            f"nnUNetTrainerIMNet needs a network with `encoder` and `decoder` submodules whose forward is "
            f"decoder(encoder(x)) and whose encoder returns a list of skips with the bottleneck last, like "
            f"PlainConvUNet and ResidualEncoderUNet. {name} has no such split. Use nnU-Net's default or ResEnc "
            f"plans, or subclass the trainer and override `build_network_architecture` to return such a network.")
    # eval mode: the meta input has batch size 1, which BatchNorm refuses in training mode at a 1-voxel bottleneck
    encoder = copy.deepcopy(network.encoder).to("meta").eval()
    with torch.no_grad():
        skips = encoder(torch.empty(1, input_channels, *patch_size, device="meta"))
    if not isinstance(skips, (list, tuple)) or not skips or not isinstance(skips[-1], torch.Tensor):
        raise TypeError(f"{name}.encoder must return a list of skip tensors with the bottleneck last; it returned "
                        f"{type(skips).__name__}. nnUNetTrainerIMNet cannot find the bottleneck.")
    bottleneck = skips[-1]
    if bottleneck.ndim != len(patch_size) + 2:
        raise TypeError(f"The bottleneck of {name} has shape {tuple(bottleneck.shape)}, which is not "
                        f"(B, C, <{len(patch_size)} spatial axes>) for patch size {tuple(patch_size)}.")
    grid = tuple(int(s) for s in bottleneck.shape[2:])
    if any(p % g for p, g in zip(patch_size, grid)):
        raise ValueError(f"Patch size {tuple(patch_size)} is not a multiple of the bottleneck grid {grid} of {name}; "
                         f"the MI head needs an integer stride per axis.")
    stride = tuple(p // g for p, g in zip(patch_size, grid))
    return Bottleneck(int(bottleneck.shape[1]), grid, stride)


class MIRegularisedNetwork(nn.Module):
    """``segmentation_network`` plus ``mi_head``. In training mode returns ``(segmentation, MIOutput)``, in
    eval mode the segmentation alone, so nnU-Net's validation and predictor use it unchanged.

    The MI is taken with the first ``image_channels`` input channels: the image. Further channels, such as the
    previous stage's segmentation in nnU-Net's cascade, are not part of what IM-Net asks the features to keep.

    ``state_dict()`` and ``load_state_dict()`` are the segmentation network's own: nnU-Net's checkpoint
    ``network_weights``, ``-pretrained_weights`` and the predictor all see a plain nnU-Net network. The MI head's
    state is ``mi_head.state_dict()``, which the trainer stores beside it.
    """

    def __init__(self, segmentation_network: nn.Module, mi_head: MIHead, image_channels: int) -> None:
        super().__init__()
        self.segmentation_network = segmentation_network
        self.mi_head = mi_head
        self.image_channels = image_channels
        #: batch norm in the encoder makes a sample's features depend on the other samples of its batch
        self.encoder_mixes_samples = any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                         for m in segmentation_network.encoder.modules())

    @property
    def encoder(self) -> nn.Module:
        return self.segmentation_network.encoder

    @property
    def decoder(self) -> nn.Module:
        """nnU-Net's ``set_deep_supervision_enabled`` sets ``decoder.deep_supervision`` through this."""
        return self.segmentation_network.decoder

    def forward(self, x: torch.Tensor, unlabelled: Optional[torch.Tensor] = None
                ) -> Union[torch.Tensor, List[torch.Tensor], Tuple[Union[torch.Tensor, List[torch.Tensor]], MIOutput]]:
        """``unlabelled`` (training only): image patches without labels that reach the MI term and nothing else.
        They pass the encoder alone (no decoder, no deep-supervision heads); with per-sample normalisation (nnU-Net's
        instance norm) in one batch with ``x``, with batch norm in a pass of their own, so that they never change
        the labelled patches' segmentation."""
        if not self.training:
            return self.segmentation_network(x)
        encoder = self.segmentation_network.encoder
        images = x[:, :self.image_channels]
        if unlabelled is None:
            skips = encoder(x)
            bottleneck = skips[-1]
        elif self.encoder_mixes_samples:
            skips = encoder(x)
            bottleneck = torch.cat((skips[-1], encoder(unlabelled)[-1]))
            images = torch.cat((images, unlabelled))
        else:
            joint = encoder(torch.cat((x, unlabelled)))
            skips = [skip[:x.shape[0]] for skip in joint]
            bottleneck = joint[-1]
            images = torch.cat((images, unlabelled))
        return self.segmentation_network.decoder(skips), self.mi_head(bottleneck, images)

    def state_dict(self, *args: Any, **kwargs: Any):
        return self.segmentation_network.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        return self.segmentation_network.load_state_dict(state_dict, strict=strict, assign=assign)
