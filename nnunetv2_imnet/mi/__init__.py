"""The MI objective as small, dimension-agnostic modules usable without nnU-Net."""
from nnunetv2_imnet.mi.config import CRITICS, VIEWS, MIConfig
from nnunetv2_imnet.mi.critics import BilinearCritic, ConcatCritic
from nnunetv2_imnet.mi.estimators import ESTIMATORS, donsker_varadhan, infonce, jensen_shannon_bound, jsd
from nnunetv2_imnet.mi.head import MIHead, MIOutput, build_mi_head, warmup_weight
from nnunetv2_imnet.mi.negatives import NegativeSampler
from nnunetv2_imnet.mi.views import InterpolateView, PatchView, PointwiseEmbedding, space_to_depth

__all__ = [
    "CRITICS", "ESTIMATORS", "VIEWS", "BilinearCritic", "ConcatCritic", "InterpolateView", "MIConfig", "MIHead",
    "MIOutput", "NegativeSampler", "PatchView", "PointwiseEmbedding", "build_mi_head", "donsker_varadhan",
    "infonce", "jensen_shannon_bound", "jsd", "space_to_depth", "warmup_weight",
]
