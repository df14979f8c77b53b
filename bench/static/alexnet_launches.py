"""AlexNet's kernel launches: every launcher of kernels/*.py called on the network's shapes.

Shared by tests/ops/gpu_compile.py (compiles them at batch 2: only divisibility specializes)
and python -m bench.static (compiles them at batch 128, where the grids and the split of conv's
weight-gradient reduction are the real ones). The tensors are ``torch.empty``: under the
stand-in driver of bench/static/sm90_driver.py nothing reads them, so even batch 128 costs only
address space. Importing this module imports neither torch nor triton; launches() does.
"""
from __future__ import annotations

# AlexNet (paper, section 3.5): the inputs [N, C, H, W] and hyper-parameters of its layers.
CONVS = {  # name: (C, H, kernels K, kernel size R, stride, padding, groups)
    "conv1": (3, 224, 96, 11, 4, 2, 1),
    "conv2": (96, 27, 256, 5, 1, 2, 2),
    "conv3": (256, 13, 384, 3, 1, 1, 1),
    "conv4": (384, 13, 384, 3, 1, 1, 2),
    "conv5": (384, 13, 256, 3, 1, 1, 2),
}
# name: (C, H, groups): both LRNs normalise each column apart (groups=2), as
# alexnet_triton.models.alexnet calls them (COLUMNS).
LRNS = {"lrn1": (96, 55, 2), "lrn2": (256, 27, 2)}
POOLS = {"pool1": (96, 55), "pool2": (256, 27), "pool5": (256, 13)}  # name: (C, H)
FCS = {"fc6": (9216, 4096, True), "fc7": (4096, 4096, True), "fc8": (4096, 1000, False)}
DROPOUT_P = 0.5
AUGMENT = (256, 224)  # the training images' side, and the crop's
LAYERS = (*CONVS, *LRNS, *POOLS, *FCS, "dropout", "augment")


def launch_names(layers=LAYERS) -> list[str]:
    """The launches of these layers, in network order."""
    names = []
    for conv in CONVS:
        names += [f"{conv}.forward", f"{conv}.backward_input", f"{conv}.backward_weight"]
    for layer in (*LRNS, *POOLS):
        names += [f"{layer}.forward", f"{layer}.backward"]
    for fc in FCS:
        names += [f"{fc}.forward", f"{fc}.backward_input", f"{fc}.backward_weight"]
    names += ["dropout", "augment"]
    return [name for name in names if name.split(".")[0] in layers]


def training_step_launches() -> list[str]:
    """The launches of one training step of alexnet_triton's AlexNet: every layer forward
    and backward, and the augmentation of the batch. Not conv1's input gradient (the
    images need none: autograd does not ask for it) nor the standalone dropout (fc6 and
    fc7 fuse theirs into the GEMM)."""
    return [name for name in launch_names()
            if name not in ("conv1.backward_input", "dropout")]


def launches(dtype, layers=LAYERS, batch: int = 128):
    """{launch name: a function that calls the launcher}, as launch_names(layers)."""
    import torch
    from alexnet_triton.kernels import augment, conv2d_relu, dropout, linear, lrn, max_pool2d
    from alexnet_triton.paper import LRN

    def empty(*shape, dtype=dtype):
        return torch.empty(shape, dtype=dtype)

    def activation(*shape, dtype=dtype):
        """A conv1 ... pool5 activation [N, C, H, W]: channels_last memory, as the convs
        write them and the model feeds LRN and the pools."""
        return torch.empty(shape, dtype=dtype, memory_format=torch.channels_last)

    wanted = set(launch_names(layers))
    calls = {}
    for name, (c, h, k, r, stride, pad, groups) in CONVS.items():
        if not wanted & {f"{name}.forward", f"{name}.backward_input", f"{name}.backward_weight"}:
            continue
        p = (h + 2 * pad - r) // stride + 1
        # conv1 reads the NCHW images; the later convs the channels_last maps before them.
        x = empty(batch, c, h, h) if name == "conv1" else activation(batch, c, h, h)
        w, b = empty(k, c // groups, r, r), empty(k)
        # The output and the gradient of the output: two tensors, so that the bytes a
        # backward moves (the static report sums its distinct tensors) count both.
        y, dy = activation(batch, k, p, p), activation(batch, k, p, p)
        conv = ([stride, stride], [pad, pad], groups)
        calls[f"{name}.forward"] = (
            lambda x=x, w=w, b=b, conv=conv: conv2d_relu.conv2d_relu_forward(x, w, b, *conv))
        calls[f"{name}.backward_input"] = (
            lambda y=y, dy=dy, w=w, x=x, conv=conv: conv2d_relu.conv2d_relu_backward_input(
                dy, y, w, list(x.shape), *conv))
        calls[f"{name}.backward_weight"] = (
            lambda y=y, dy=dy, x=x, w=w, conv=conv: conv2d_relu.conv2d_relu_backward_weight(
                dy, y, x, list(w.shape), *conv))
    for name, (c, h, groups) in LRNS.items():
        a, g = ((activation(batch, c, h, h), activation(batch, c, h, h)) if name in layers
                else (None, None))
        calls[f"{name}.forward"] = (
            lambda a=a, groups=groups: lrn.lrn_forward(a, **LRN, groups=groups))
        calls[f"{name}.backward"] = (
            lambda a=a, g=g, groups=groups: lrn.lrn_backward(g, a, **LRN, groups=groups))
    for name, (c, h) in POOLS.items():
        x = activation(batch, c, h, h) if name in layers else None
        o = (h - 3) // 2 + 1
        calls[f"{name}.forward"] = lambda x=x: max_pool2d.max_pool2d_forward(x, [3, 3], [2, 2])
        calls[f"{name}.backward"] = (
            lambda x=x, o=o: max_pool2d.max_pool2d_backward(
                activation(batch, x.shape[1], o, o),
                activation(batch, x.shape[1], o, o, dtype=torch.int8),
                list(x.shape), [3, 3], [2, 2]))
    seed = dropout.seed_tensor(0, "cpu")
    for name, (k, n, relu) in FCS.items():
        if name not in layers:
            continue
        x, w, b, y, dy = empty(batch, k), empty(n, k), empty(n), empty(batch, n), empty(batch, n)
        # fc6, fc7: ReLU and dropout, whose backward masks with the output; fc8: neither.
        p, s, out = (DROPOUT_P, seed, y) if relu else (0.0, None, None)
        calls[f"{name}.forward"] = (
            lambda x=x, w=w, b=b, relu=relu, p=p, s=s: linear.linear_forward(x, w, b, relu, p, s))
        calls[f"{name}.backward_input"] = (
            lambda dy=dy, out=out, w=w, p=p: linear.linear_backward_input(dy, out, w, p))
        calls[f"{name}.backward_weight"] = (
            lambda dy=dy, out=out, x=x, p=p: linear.linear_backward_weight(dy, out, x, p))
    calls["dropout"] = lambda: dropout.dropout(empty(batch, 4096), DROPOUT_P, seed)
    side, crop = AUGMENT  # uint8 images in, float32 out, whatever the variant
    offsets = torch.zeros(batch, dtype=torch.int32)  # read on the host: must be in range
    params = augment.pack_params(offsets, offsets, offsets, torch.zeros(batch, 3))
    calls["augment"] = lambda: augment.augment(
        empty(batch, 3, side, side, dtype=torch.uint8), empty(3, side, side, dtype=torch.float32),
        params, crop)
    return {name: calls[name] for name in launch_names(layers)}
