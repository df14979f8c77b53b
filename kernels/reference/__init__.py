"""Plain PyTorch references of the Triton launchers, module for module and name for name.

They run on CPU machines without ``TRITON_INTERPRET=1`` and are the oracle of the tests.
"""
