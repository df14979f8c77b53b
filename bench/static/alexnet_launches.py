"""AlexNet's kernel launches: every launcher of kernels/*.py called on the network's shapes.

Shared by tests/ops/gpu_compile.py (compiles them at batch 2: only divisibility specializes)
and python -m bench.static (compiles them at batch 128, where the grids and the split of conv's
weight-gradient reduction are the real ones). The tensors are ``torch.empty``: under the
stand-in driver of bench/static/sm90_driver.py nothing reads them, so even batch 128 costs only
address space. Importing this module imports neither torch nor triton; launches() does.
"""
from __future__ import annotations

from alexnet_triton.shapes import (CROP_SIZE, DROPOUT_P, IMAGE_SIZE, Conv, FullyConnected, Pool,
                                   ResponseNorm, of_kind)

# AlexNet's layers by kind, as alexnet_triton/shapes.py states them (both columns on one
# device: groups=2 where a column sees only its own maps, both LRNs included).
CONVS, LRNS = of_kind(Conv), of_kind(ResponseNorm)
POOLS, FCS = of_kind(Pool), of_kind(FullyConnected)
AUGMENT = (IMAGE_SIZE, CROP_SIZE)  # the training images' side, and the crop's
# The convs whose input the kernels read folded (conv1: its image's 3 channels; the rule is
# kernels.conv2d_relu.folds, which launches() checks this against): a launch of their own
# copies it once a step, for the forward and the weight gradient.
FOLDED = tuple(name for name, conv in CONVS.items()
               if conv.groups == 1 and conv.in_channels < 16)
LAYERS = (*CONVS, *LRNS, *POOLS, *FCS, "dropout", "augment")


def launch_names(layers=LAYERS) -> list[str]:
    """The launches of these layers, in network order."""
    names = []
    for conv in CONVS:
        names += [f"{conv}.fold_input"] if conv in FOLDED else []
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
    for name, layer in CONVS.items():
        if not wanted & {f"{name}.forward", f"{name}.backward_input", f"{name}.backward_weight"}:
            continue
        # conv1 reads the NCHW images; the later convs the channels_last maps before them.
        x = empty(*layer.input(batch)) if name == "conv1" else activation(*layer.input(batch))
        w, b = empty(*layer.weight), empty(layer.out_channels)
        # The output and the gradient of the output: two tensors, so that the bytes a
        # backward moves (the static report sums its distinct tensors) count both.
        y, dy = activation(*layer.output(batch)), activation(*layer.output(batch))
        conv = ([layer.stride] * 2, [layer.padding] * 2, layer.groups)
        # As alexnet_triton.functional runs them: where the input gradient is wanted (every
        # conv but conv1, whose input is the images) the weight gradient writes the masked
        # grad_output, which the input gradient then reads without the output.
        masks = name != "conv1"
        # As alexnet_triton.functional runs them: a folded input copied once, by a launch of
        # its own, and that copy read by the forward and the weight gradient.
        if (name in FOLDED) != conv2d_relu.folds(list(x.shape), layer.groups):
            raise AssertionError(f"alexnet_launches.FOLDED disagrees with the kernels on {name}")
        folded = None
        if name in FOLDED:
            _, shape, *_ = conv2d_relu.input_layout(list(x.shape), list(w.shape), *conv)
            folded = activation(*shape)
            calls[f"{name}.fold_input"] = (
                lambda x=x, w=w, conv=conv: conv2d_relu.conv2d_relu_fold_input(
                    x, list(w.shape), *conv))
        calls[f"{name}.forward"] = (
            lambda x=x, w=w, b=b, conv=conv, folded=folded: conv2d_relu.conv2d_relu_forward(
                x, w, b, *conv, folded_input=folded))
        calls[f"{name}.backward_input"] = (
            lambda y=y, dy=dy, w=w, x=x, conv=conv, masks=masks:
            conv2d_relu.conv2d_relu_backward_input(dy, None if masks else y, w, list(x.shape),
                                                   *conv))
        calls[f"{name}.backward_weight"] = (
            lambda y=y, dy=dy, x=x, w=w, conv=conv, masks=masks, folded=folded:
            conv2d_relu.conv2d_relu_backward_weight(dy, y, x, list(w.shape), *conv,
                                                    masked_grad_output=masks,
                                                    folded_input=folded))
    for name, layer in LRNS.items():
        groups = layer.groups
        a, g = ((activation(*layer.input(batch)), activation(*layer.input(batch)))
                if name in layers else (None, None))
        calls[f"{name}.forward"] = (
            lambda a=a, groups=groups: lrn.lrn_forward(a, **LRN, groups=groups))
        calls[f"{name}.backward"] = (
            lambda a=a, g=g, groups=groups: lrn.lrn_backward(g, a, **LRN, groups=groups))
    for name, layer in POOLS.items():
        x = activation(*layer.input(batch)) if name in layers else None
        window = ([layer.kernel] * 2, [layer.stride] * 2)
        calls[f"{name}.forward"] = (
            lambda x=x, window=window: max_pool2d.max_pool2d_forward(x, *window))
        calls[f"{name}.backward"] = (
            lambda x=x, out=layer.output(batch), window=window: max_pool2d.max_pool2d_backward(
                activation(*out), activation(*out, dtype=torch.int8), list(x.shape), *window))
    seed = dropout.seed_tensor(0, "cpu")
    for name, layer in FCS.items():
        if name not in layers:
            continue
        relu = layer.relu
        x, w, b = empty(*layer.input(batch)), empty(*layer.weight), empty(layer.out_features)
        y, dy = empty(*layer.output(batch)), empty(*layer.output(batch))
        # fc6, fc7: ReLU and dropout, whose backward masks with the output; fc8: neither.
        p, s, out = (DROPOUT_P, seed, y) if layer.dropout else (0.0, None, None)
        calls[f"{name}.forward"] = (
            lambda x=x, w=w, b=b, relu=relu, p=p, s=s: linear.linear_forward(x, w, b, relu, p, s))
        calls[f"{name}.backward_input"] = (
            lambda dy=dy, out=out, w=w, p=p: linear.linear_backward_input(dy, out, w, p))
        calls[f"{name}.backward_weight"] = (
            lambda dy=dy, out=out, x=x, p=p: linear.linear_backward_weight(dy, out, x, p))
    # The standalone dropout on fc6's outputs (the model fuses it into fc6's GEMM).
    calls["dropout"] = lambda: dropout.dropout(empty(*FCS["fc6"].output(batch)), DROPOUT_P, seed)
    side, crop = AUGMENT  # uint8 images in, float32 out, whatever the variant
    offsets = torch.zeros(batch, dtype=torch.int32)  # read on the host: must be in range
    params = augment.pack_params(offsets, offsets, offsets, torch.zeros(batch, 3))
    calls["augment"] = lambda: augment.augment(
        empty(batch, 3, side, side, dtype=torch.uint8), empty(3, side, side, dtype=torch.float32),
        params, crop)
    return {name: calls[name] for name in launch_names(layers)}
