"""Python references for tests/test_interop.cpp: torchcfm's U-Net, torch.save files and safetensors as Python has them.

Usage:
  interop_ref.py export DIR       load DIR/model.safetensors into torchcfm's UNetModelWrapper (built from its metadata),
                                  run it on DIR/io.npz (x, t[, y]) and write DIR/ref.npz (out)
  interop_ref.py torchcfm DIR     write a small random torchcfm model in the layout of torchcfm's CIFAR-10 checkpoints
                                  (DIR/ckpt_zip.pt, DIR/ckpt_legacy.pt, DIR/ckpt_parallel.pt with DataParallel's
                                  "module." prefix), its EMA weights as DIR/ema.safetensors, its UNetModelWrapper
                                  arguments as DIR/kwargs.json and its outputs as DIR/io.npz
  interop_ref.py torchfile DIR    write DIR/values.pt (zip) and DIR/values_legacy.pt (legacy format) holding
                                  tensors of several dtypes, views and nested containers, and DIR/values.npz with
                                  the expected arrays
  interop_ref.py fidpth DIR       a random pytorch-fid FID Inception state_dict, as pytorch-fid's own .pth holds it
                                  (classifier and BatchNorm counters included), saved by torch.save in the zip
                                  (DIR/fid_zip.pth) and legacy (DIR/fid_legacy.pth) formats, and the same weights
                                  as scripts/export_fid_inception.py exports them (DIR/fid.npz)
Exits with 77 when torchcfm or safetensors is not installed.
"""
import collections
import importlib.util
import json
import os
import sys

import numpy as np
import torch

for mod in ("torchcfm", "safetensors"):
    if importlib.util.find_spec(mod) is None:
        print(f"{mod} is not installed", file=sys.stderr)
        sys.exit(77)
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from torchcfm_import import torchcfm_unet_module  # noqa: E402

UNetModelWrapper = torchcfm_unet_module().UNetModelWrapper


def export(d):
    path = os.path.join(d, "model.safetensors")
    with safe_open(path, "pt") as f:
        kwargs = json.loads(f.metadata()["torchcfm_unet_wrapper"])
    model = UNetModelWrapper(**kwargs)
    model.load_state_dict(load_file(path))  # strict: every name and shape must match
    model.eval()
    io = np.load(os.path.join(d, "io.npz"))
    y = torch.from_numpy(io["y"]) if "y" in io else None
    with torch.no_grad():
        out = model(torch.from_numpy(io["t"]), torch.from_numpy(io["x"]), y)
    np.savez(os.path.join(d, "ref.npz"), out=out.numpy())


def randomized(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        # Move every parameter (the zero-initialised output layers included) so that the outputs depend on all.
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def torchcfm(d):
    # Scale-shift norm, class labels, residual up/down blocks, attention at the 8x8 level (whose last decoder block
    # also upsamples), dropout (off in eval): the layout cases of the name mapping that the CIFAR-10 recipe lacks.
    kwargs = dict(dim=(3, 16, 16), num_channels=32, num_res_blocks=1, channel_mult=[1, 2], attention_resolutions="8",
                  num_heads=2, num_head_channels=16, use_scale_shift_norm=True, resblock_updown=True, dropout=0.1,
                  class_cond=True, num_classes=3)
    net = randomized(UNetModelWrapper(**kwargs), 1)
    ema = randomized(UNetModelWrapper(**kwargs), 2)
    # torchcfm's examples/images/cifar10/train_cifar10.py: Adam, LambdaLR warm-up, and this dict.
    optim = torch.optim.Adam(net.parameters(), lr=2e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda=lambda step: min(step, 5000) / 5000)
    x = torch.randn(3, 3, 16, 16)
    t = torch.rand(3)
    y = torch.tensor([0, 2, 1])
    net.train()
    net(t, x, y).square().mean().backward()
    optim.step()
    sched.step()
    net.eval()
    ckpt = {"net_model": net.state_dict(), "ema_model": ema.state_dict(), "sched": sched.state_dict(),
            "optim": optim.state_dict(), "step": 123}
    torch.save(ckpt, os.path.join(d, "ckpt_zip.pt"))
    torch.save(ckpt, os.path.join(d, "ckpt_legacy.pt"), _use_new_zipfile_serialization=False)
    parallel = dict(ckpt)
    for key in ("net_model", "ema_model"):
        parallel[key] = collections.OrderedDict(("module." + k, v) for k, v in ckpt[key].items())
    torch.save(parallel, os.path.join(d, "ckpt_parallel.pt"))
    save_file(ema.state_dict(), os.path.join(d, "ema.safetensors"))
    with open(os.path.join(d, "kwargs.json"), "w") as f:
        json.dump(kwargs, f)
    with torch.no_grad():
        out_net, out_ema = net(t, x, y), ema(t, x, y)
    np.savez(os.path.join(d, "io.npz"), x=x.numpy(), t=t.numpy(), y=y.numpy(), out_net=out_net.numpy(),
             out_ema=out_ema.numpy())


def torchfile(d):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    values = collections.OrderedDict()
    values["f32"] = torch.randn(2, 3, 4, generator=g)
    values["f64"] = torch.randn(5, generator=g, dtype=torch.float64)
    values["f16"] = torch.randn(3, 2, generator=g).half()
    values["bf16"] = torch.randn(7, generator=g).bfloat16()
    values["i64"] = torch.arange(-3, 9).reshape(3, 4)
    values["u8"] = torch.arange(250, 256, dtype=torch.uint8)
    values["bool"] = torch.tensor([True, False, True])
    values["scalar"] = torch.tensor(2.5)
    values["empty"] = torch.zeros(0, 3)
    values["transposed"] = base.t()  # a strided view of the same storage as the two below
    values["column"] = base[:, 2]
    values["rows"] = base[1:3]
    values["param"] = torch.nn.Parameter(torch.randn(3, generator=g))
    obj = {"state": values, "nested": {"list": [1, 2.5, "three", None, True], "tuple": (4, -5), "big": 2**70},
           "step": 42}
    torch.save(obj, os.path.join(d, "values.pt"))
    torch.save(obj, os.path.join(d, "values_legacy.pt"), _use_new_zipfile_serialization=False)
    np.savez(os.path.join(d, "values.npz"),
             **{k: np.ascontiguousarray((v.detach().float() if v.dtype == torch.bfloat16 else v.detach()).numpy())
                for k, v in values.items()})


def fidpth(d):
    spec = importlib.util.spec_from_file_location(
        "export_fid_inception", os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "export_fid_inception.py"))
    exporter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exporter)
    model = exporter.build_fid_inception(random_seed=5)
    state = model.state_dict()
    torch.save(state, os.path.join(d, "fid_zip.pth"))
    torch.save(state, os.path.join(d, "fid_legacy.pth"), _use_new_zipfile_serialization=False)
    np.savez(os.path.join(d, "fid.npz"), **exporter.fm_arrays(model))


if __name__ == "__main__":
    {"export": export, "torchcfm": torchcfm, "torchfile": torchfile, "fidpth": fidpth}[sys.argv[1]](sys.argv[2])
