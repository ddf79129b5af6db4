#!/usr/bin/env python3
"""Export the FID Inception-v3 weights to the .npz file that `fm fid-features` / `fm fid --weights` load.

fm never downloads anything. Run this once where there is internet access and Python with torch, torchvision and
pytorch-fid (pip install pytorch-fid):

    python scripts/export_fid_inception.py --out fid_inception.npz

It builds pytorch-fid's FID Inception (pytorch_fid.inception.fid_inception_v3: torchvision's inception_v3 with the
FID blocks, loading pt_inception-2015-12-05-6726825d.pth, which torch.hub downloads and caches), and writes every
parameter and BatchNorm running statistic as a float32 array named as in the state_dict
("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.bn.running_var", ...). The classifier (fc.*) is left out: FID
uses the 2048-d pool3 features. Copy the file to the machine that runs fm; it needs no Python.

Offline alternatives:
    --pth FILE          load a pt_inception-2015-12-05-6726825d.pth downloaded by other means
                        (https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/
                        pt_inception-2015-12-05-6726825d.pth)
    --random-init SEED  random weights, no download: for tests only (FID numbers from it mean nothing)
"""
import argparse
import contextlib
import sys
from unittest import mock

import numpy as np
import torch


@contextlib.contextmanager
def _no_fid_weights():
    """Lets pytorch-fid's own fid_inception_v3() build its network without fetching or loading the FID weights."""
    import pytorch_fid.inception as pfi
    import torchvision.models.inception as tvi
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(tvi.Inception3, "load_state_dict", lambda self, *a, **k: None):
        yield


def randomize_(model, seed):
    """Random weights that keep activations O(1) through the 94 conv layers: He-normal convolutions, and BatchNorm
    affine parameters and running statistics drawn near identity, so that every exported tensor matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(0.01 * torch.randn(m.weight.shape, generator=g))
                m.bias.zero_()
    return model


def build_fid_inception(pth=None, random_seed=None):
    """pytorch-fid's FID Inception in eval mode: downloaded weights, a local .pth, or random (seeded) weights."""
    import pytorch_fid.inception as pfi
    if random_seed is not None:
        with _no_fid_weights():
            model = pfi.fid_inception_v3()
        randomize_(model, random_seed)
    elif pth is not None:
        state = torch.load(pth, map_location="cpu")
        with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: state):
            model = pfi.fid_inception_v3()
    else:
        model = pfi.fid_inception_v3()
    return model.eval()


def fm_arrays(model):
    """The state_dict as fm reads it: float32 arrays, no classifier, no BatchNorm step counters."""
    out = {}
    for name, t in model.state_dict().items():
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        out[name] = np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the .npz to write")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pth", help="a local pt_inception-2015-12-05-6726825d.pth instead of downloading it")
    src.add_argument("--random-init", type=int, metavar="SEED", help="random weights, no download (tests only)")
    args = p.parse_args(argv)

    model = build_fid_inception(pth=args.pth, random_seed=args.random_init)
    arrays = fm_arrays(model)
    np.savez(args.out, **arrays)
    n = sum(a.size for a in arrays.values())
    print(f"wrote {len(arrays)} arrays ({n} values) to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
