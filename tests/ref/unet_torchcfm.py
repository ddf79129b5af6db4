"""Reference outputs of torchcfm's ADM U-Net (torchcfm.models.unet.unet) for tests/test_nn.cpp.

Usage: unet_torchcfm.py OUT_DIR. For each case writes OUT_DIR/<case>_params.npz (the state_dict renamed to fm's
parameter names and shapes) and OUT_DIR/<case>_io.npz (x, t, y, out). Exits with 77 when torchcfm is not installed.
"""
import importlib.util
import os
import re
import sys
import types

import numpy as np
import torch

spec = importlib.util.find_spec("torchcfm")
if spec is None:
    print("torchcfm is not installed", file=sys.stderr)
    sys.exit(77)
# Only the U-Net is needed: skip torchcfm/__init__.py, which imports the optimal-transport extras (POT).
pkg = types.ModuleType("torchcfm")
pkg.__path__ = list(spec.submodule_search_locations)
sys.modules["torchcfm"] = pkg
from torchcfm.models.unet.unet import (  # noqa: E402
    AttentionBlock,
    Downsample,
    ResBlock,
    UNetModel,
    Upsample,
)

RES_LEAVES = {
    "in_layers.0": "in_norm",
    "in_layers.2": "in_conv",
    "emb_layers.1": "emb_proj",
    "out_layers.0": "out_norm",
    "out_layers.3": "out_conv",
    "skip_connection": "skip",
}


def child_name(child, decoder):
    if isinstance(child, ResBlock):
        if child.updown:
            return "up" if decoder else "down"
        return "res"
    if isinstance(child, AttentionBlock):
        return "attn"
    if isinstance(child, Downsample):
        return "down"
    if isinstance(child, Upsample):
        return "up"
    raise TypeError(type(child))


def leaf_name(child, rest):
    if isinstance(child, ResBlock):
        for src, dst in RES_LEAVES.items():
            if rest.startswith(src + "."):
                return dst + rest[len(src):]
        raise KeyError(rest)
    if isinstance(child, Downsample):
        return rest.replace("op.", "conv.", 1)
    return rest  # attention (norm, qkv, proj_out) and Upsample (conv) already match


def fm_name(model, name):
    fixed = {"time_embed.0.": "time_fc1.", "time_embed.2.": "time_fc2.", "input_blocks.0.0.": "input_conv.",
             "out.0.": "out_norm.", "out.2.": "out_conv.", "label_emb.": "label_emb."}
    for src, dst in fixed.items():
        if name.startswith(src):
            return dst + name[len(src):]
    m = re.match(r"(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(.*)", name)
    if m:
        blocks, i, j, rest = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        child = getattr(model, blocks)[i][j]
        decoder = blocks == "output_blocks"
        index = i if decoder else i - 1  # fm keeps the stem conv apart from input_blocks
        return f"{blocks}.{index}.{child_name(child, decoder)}.{leaf_name(child, rest)}"
    m = re.match(r"middle_block\.(\d)\.(.*)", name)
    if m:
        j, rest = int(m.group(1)), m.group(2)
        child = model.middle_block[j]
        return "middle." + ["res", "attn", "res2"][j] + "." + leaf_name(child, rest)
    raise KeyError(name)


def export(model, name, out_dir, x, t, y):
    torch.manual_seed(1)
    with torch.no_grad():
        # Move every parameter (the zero-initialised output layers included) so that the outputs depend on all.
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    params = {}
    for key, value in model.state_dict().items():
        v = value.detach().float()
        if key.endswith(("qkv.weight", "proj_out.weight")):
            v = v.unsqueeze(-1)  # conv1d [O, I, 1] -> conv2d [O, I, 1, 1]
        if key == "label_emb.weight":
            v = torch.cat([v, torch.zeros_like(v[:1])])  # fm's extra null-label row
        params[fm_name(model, key)] = v.numpy()
    with torch.no_grad():
        out = model(t, x, y)
    np.savez(os.path.join(out_dir, f"{name}_params.npz"), **params)
    io = {"x": x.numpy(), "t": t.numpy(), "out": out.numpy()}
    if y is not None:
        io["y"] = y.numpy()
    np.savez(os.path.join(out_dir, f"{name}_io.npz"), **io)


def main():
    out_dir = sys.argv[1]
    torch.manual_seed(0)
    batch = 3
    # The cases mirror UNetReference in tests/test_nn.cpp; attention_resolutions are ds values here.
    # plain: conv resampling, heads from num_head_channels (2 and 4 heads), dropout (off in eval).
    plain = UNetModel(image_size=16, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=1,
                      attention_resolutions=(2,), dropout=0.1, channel_mult=(1, 2), num_heads=4,
                      num_head_channels=16)
    x = torch.randn(batch, 3, 16, 16)
    t = torch.rand(batch)
    export(plain, "plain", out_dir, x, t, None)

    # film: scale-shift norm, class-conditional, average-pool / plain nearest resampling, attention at two levels.
    film = UNetModel(image_size=16, in_channels=3, model_channels=32, out_channels=3, num_res_blocks=2,
                     attention_resolutions=(1, 2), channel_mult=(1, 2), conv_resample=False, num_classes=5,
                     num_heads=2, num_head_channels=-1, use_scale_shift_norm=True)
    x = torch.randn(batch, 3, 16, 16)
    t = torch.rand(batch)
    y = torch.tensor([0, 4, 2])
    export(film, "film", out_dir, x, t, y)

    # updown: residual up/down blocks, three levels, a non-square two-channel image (16 x 8; width 8).
    updown = UNetModel(image_size=8, in_channels=2, model_channels=32, out_channels=2, num_res_blocks=1,
                       attention_resolutions=(4,), channel_mult=(1, 1, 2), num_heads=1, num_head_channels=32,
                       resblock_updown=True)
    x = torch.randn(batch, 2, 16, 8)
    t = torch.rand(batch)
    export(updown, "updown", out_dir, x, t, None)


if __name__ == "__main__":
    main()
