"""``alexnet_triton.reference``: the torch.nn twin's drop-in import (it lives in ``models/``)."""
from alexnet_triton.models.reference import ReferenceAlexNet

__all__ = ["ReferenceAlexNet"]
