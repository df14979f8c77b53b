"""alexnet_triton: AlexNet (Krizhevsky, Sutskever and Hinton, 2012) on fused Triton kernels.

``alexnet_triton.functional`` holds the differentiable fused ops and
``alexnet_triton.layers`` their nn.Module forms. CUDA tensors run the compiled Triton
kernels; CPU tensors run the PyTorch references, or the Triton kernels through Triton's
interpreter when ``TRITON_INTERPRET=1`` is set before triton is first imported.
"""

__version__ = "0.1.0"
