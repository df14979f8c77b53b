"""The networks: the paper's two-column AlexNet, its one-column ablation, torchvision's variant
(all on the fused kernels) and the plain torch.nn twin the tests and benchmarks compare with.
"""
from alexnet_triton.models.alexnet import AlexNet, alexnet
from alexnet_triton.models.build import build_model
from alexnet_triton.models.one_column import OneColumnAlexNet
from alexnet_triton.models.reference import ReferenceAlexNet
from alexnet_triton.models.torchvision import torchvision_alexnet

__all__ = ["AlexNet", "alexnet", "OneColumnAlexNet", "ReferenceAlexNet", "torchvision_alexnet",
           "build_model"]
