"""IM-Net mutual-information regularisation for nnU-Net v2.

Kept free of heavy imports: the start-up hook that registers ``trainers/`` with nnU-Net imports this package in
every interpreter of the environment. Import the parts you need explicitly, e.g. ``nnunetv2_imnet.mi``.
"""

__version__ = "0.1.0"
