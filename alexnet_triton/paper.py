"""The paper's local response normalization constants, stated once (section 3.3).

``b_c = a_c / (k + alpha / size * sum_j a_j ** 2) ** beta`` over ``size`` adjacent maps,
with alpha divided by the size as torch and cuda-convnet read it (see
``alexnet_triton.functional.local_response_norm``). Used by the ops' defaults, the models
and bench/. Imports nothing, so anything may import it (bench/static/alexnet_launches.py and the
GPU check without torch).
"""

LRN_SIZE = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75
LRN_K = 2.0
# As keyword arguments: F.local_response_norm(x, **LRN), nn.LocalResponseNorm(**LRN).
LRN = {"size": LRN_SIZE, "alpha": LRN_ALPHA, "beta": LRN_BETA, "k": LRN_K}
