"""``alexnet_triton.model``: the drop-in import of the networks (they live in ``models/``)."""
from alexnet_triton.models.alexnet import (MIN_INPUT_SIZE, PAPER_INPUT_SIZE, AlexNet, alexnet,
                                           fc6_operands)
from alexnet_triton.models.torchvision import torchvision_alexnet

__all__ = ["AlexNet", "alexnet", "torchvision_alexnet", "fc6_operands", "MIN_INPUT_SIZE",
           "PAPER_INPUT_SIZE"]
