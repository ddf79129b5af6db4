"""Reference outputs of torchcfm's ADM U-Net (torchcfm.models.unet.unet) for tests/test_nn.cpp.

Usage: unet_torchcfm.py OUT_DIR. For each case writes OUT_DIR/<case>_params.npz (the state_dict as torchcfm names
it) and OUT_DIR/<case>_io.npz (x, t, y, out). Exits with 77 when torchcfm is not installed.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from torchcfm_import import torchcfm_unet_module  # noqa: E402

UNetModel = torchcfm_unet_module().UNetModel


def export(model, name, out_dir, x, t, y):
    torch.manual_seed(1)
    with torch.no_grad():
        # Move every parameter (the zero-initialised output layers included) so that the outputs depend on all.
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    # torchcfm's own names and shapes: fm maps them onto its U-Net with src/interop/torchcfm_unet.h.
    params = {key: value.detach().float().numpy() for key, value in model.state_dict().items()}
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
