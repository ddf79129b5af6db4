"""Reference numbers for tests/test_fid.cpp, computed with pytorch-fid itself (and numpy/scipy), never with fm code.

  fid_ref.py inception OUT SEED   random-weight FID Inception exported with scripts/export_fid_inception.py
                                  (OUT/weights.npz); test images (OUT/images.npz, arr_0 uint8 NHWC, and PNG files);
                                  pytorch-fid's pool3 features of them (OUT/features.npy) through its own
                                  InceptionV3([3]) and get_activations, and mu/cov of the first 6 (OUT/stats_ref.npz)
  fid_ref.py frechet OUT          random statistics of size 2048 (OUT/case_*.npz) and pytorch-fid's
                                  calculate_frechet_distance between pairs of them (OUT/frechet.json)
  fid_ref.py stats-write OUT      statistics files written by numpy the ways pytorch-fid and numpy users do
  fid_ref.py clean OUT SEED       the weights and images of `inception`, their features by clean-fid's "clean" mode: its
                                  own file reading and PIL resize (cleanfid.fid.get_files_features) and its Inception
                                  wrapper's input scaling (cleanfid.inception_torchscript.InceptionV3W), the network
                                  being pytorch-fid's with these weights (OUT/clean_features.npy)
  fid_ref.py pil-resize OUT       float images of several sizes resized by PIL itself (mode "F", BICUBIC) up and down
                                  (OUT/pil_resize.npz: in_K and out_K)
  fid_ref.py stats-echo IN OUT    loads IN (written by fm) with numpy, checks dtypes, writes it back compressed
"""
import json
import os
import sys
from unittest import mock

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_images(out, seed):
    """The weights file exactly as a user makes it (the export script's --random-init path), and 9 test images of
    32x32 (not 299: the resize is exercised) as OUT/images.npz and PNG files: 6 from one distribution (smooth colour
    fields plus noise), 3 from another (dark, high-frequency stripes)."""
    from PIL import Image
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import export_fid_inception as ex
    ex.main(["--out", os.path.join(out, "weights.npz"), "--random-init", str(seed)])

    rng = np.random.default_rng(seed)
    h = w = 32
    imgs = []
    for _ in range(6):
        coarse = rng.uniform(0, 255, size=(4, 4, 3))
        field = np.kron(coarse, np.ones((8, 8, 1)))
        imgs.append(np.clip(field + rng.normal(0, 20, size=(h, w, 3)), 0, 255))
    for _ in range(3):
        stripes = (np.arange(w)[None, :, None] % 2) * rng.uniform(40, 80, size=(1, 1, 3))
        imgs.append(np.clip(stripes + rng.uniform(0, 30, size=(h, w, 3)), 0, 255))
    arr = np.stack(imgs).round().astype(np.uint8)
    np.savez(os.path.join(out, "images.npz"), arr_0=arr)
    files = []
    for i, a in enumerate(arr):
        files.append(os.path.join(out, f"img{i}.png"))
        Image.fromarray(a).save(files[-1])
    return files


def inception(out, seed):
    import torch
    from pytorch_fid.fid_score import get_activations

    torch.set_num_threads(1)
    files = test_images(out, seed)
    # pytorch-fid's own InceptionV3 wrapper loading the same state_dict through fid_inception_v3's load_state_dict.
    net = random_pytorch_fid_net(seed, resize_input=True, normalize_input=True)
    act = get_activations(files, net, batch_size=len(files), dims=2048, device="cpu", num_workers=0)
    np.save(os.path.join(out, "features.npy"), act.astype(np.float64))
    np.savez_compressed(os.path.join(out, "stats_ref.npz"), mu=np.mean(act[:6], axis=0),
                        sigma=np.cov(act[:6], rowvar=False))


def random_pytorch_fid_net(seed, resize_input, normalize_input):
    """pytorch-fid's InceptionV3 wrapper (pool3) on the random weights scripts/export_fid_inception.py makes."""
    import pytorch_fid.inception as pfi
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import export_fid_inception as ex
    state = ex.build_fid_inception(random_seed=seed).state_dict()
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: state):
        return pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=resize_input,
                               normalize_input=normalize_input).eval()


def clean(out, seed):
    import torch
    from cleanfid.fid import get_files_features
    from cleanfid.inception_torchscript import InceptionV3W

    torch.set_num_threads(1)
    files = test_images(out, seed)
    net = random_pytorch_fid_net(seed, resize_input=False, normalize_input=False)

    class Layers(torch.nn.Module):
        """Stands in for the TorchScript graph's layers: pool3 of the network, on input already scaled."""
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)[0]

    # clean-fid's own wrapper, with its TorchScript download replaced by the random network.
    model = InceptionV3W.__new__(InceptionV3W)
    torch.nn.Module.__init__(model)
    model.layers = Layers(net)
    model.resize_inside = False
    feats = get_files_features(files, model=model, num_workers=0, batch_size=4, device=torch.device("cpu"),
                               mode="clean", verbose=False)
    np.save(os.path.join(out, "clean_features.npy"), feats.astype(np.float64))


def pil_resize(out):
    from PIL import Image
    rng = np.random.default_rng(5)
    # (in H, in W, out H, out W): upsampling as FID does at 32x32, downsampling (the filter widens), both at once,
    # odd sizes, and an axis that does not change.
    cases = [(32, 32, 299, 299), (7, 13, 299, 299), (512, 384, 299, 299), (40, 24, 17, 50), (16, 20, 16, 45)]
    arrays = {}
    for i, (h, w, oh, ow) in enumerate(cases):
        x = rng.integers(0, 256, size=(h, w)).astype(np.float32)
        if i == 3:  # "F" images are not clipped: values outside [0, 255] pass through
            x = (x - 100.0) * 3.7
        y = np.asarray(Image.fromarray(x, mode="F").resize((ow, oh), resample=Image.BICUBIC))
        assert y.dtype == np.float32 and y.shape == (oh, ow), (y.dtype, y.shape)
        arrays[f"in_{i}"], arrays[f"out_{i}"] = x, y
    np.savez(os.path.join(out, "pil_resize.npz"), **arrays)


def frechet(out):
    from pytorch_fid.fid_score import calculate_frechet_distance
    rng = np.random.default_rng(7)
    d = 2048

    def stats(n, scale, shift):
        # Features shaped like Inception's: non-negative, correlated through a random mixing.
        mix = rng.normal(0, 1, size=(d, d)) / np.sqrt(d)
        x = np.abs(rng.normal(0, 1, size=(n, d)) @ (np.eye(d) + 0.3 * mix)) * scale + shift
        return np.mean(x, axis=0), np.cov(x, rowvar=False)

    cases = {"full_a": stats(2600, 1.0, 0.0), "full_b": stats(3000, 1.1, 0.05),
             "deficient_a": stats(150, 1.0, 0.0), "deficient_b": stats(200, 0.9, 0.02)}
    for k, (mu, sigma) in cases.items():
        np.savez(os.path.join(out, f"case_{k}.npz"), mu=mu, sigma=sigma)
    pairs = [("full_a", "full_b"), ("deficient_a", "deficient_b")]
    ref = {f"{a}|{b}": float(calculate_frechet_distance(*cases[a], *cases[b])) for a, b in pairs}
    with open(os.path.join(out, "frechet.json"), "w") as f:
        json.dump(ref, f)


def stats_write(out):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 16))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    np.savez_compressed(os.path.join(out, "pytorch_fid_style.npz"), mu=mu, sigma=sigma)  # as save_fid_stats
    np.savez(os.path.join(out, "plain_with_n.npz"), mu=mu, sigma=sigma, n=np.int64(40))
    np.savez(os.path.join(out, "expected.npz"), mu=mu, sigma=sigma)
    # Faults, each of which fm must name.
    np.savez(os.path.join(out, "bad_no_sigma.npz"), mu=mu)
    np.savez(os.path.join(out, "bad_keys.npz"), m=mu, s=sigma)
    np.savez(os.path.join(out, "bad_sigma_shape.npz"), mu=mu, sigma=sigma[:, :15])
    np.savez(os.path.join(out, "bad_mu_shape.npz"), mu=mu[None, :], sigma=sigma)
    np.savez(os.path.join(out, "bad_dtype.npz"), mu=mu.astype(np.int64), sigma=sigma)
    np.savez(os.path.join(out, "bad_nonfinite.npz"), mu=mu, sigma=np.where(np.eye(16) > 0, np.nan, sigma))
    np.savez(os.path.join(out, "bad_asymmetric.npz"), mu=mu, sigma=sigma + np.triu(np.ones((16, 16)), 1))
    np.savez(os.path.join(out, "bad_n.npz"), mu=mu, sigma=sigma, n=np.float64(40))
    np.savez(os.path.join(out, "with_resolution.npz"), mu=mu, sigma=sigma, resolution=np.array([16, 24]))
    np.savez(os.path.join(out, "bad_resolution.npz"), mu=mu, sigma=sigma, resolution=np.array([16.0, 24.0]))
    np.savez(os.path.join(out, "bad_resolution_zero.npz"), mu=mu, sigma=sigma, resolution=np.array([0, 24]))
    with open(os.path.join(out, "pytorch_fid_style.npz"), "rb") as f:
        data = f.read()
    with open(os.path.join(out, "bad_truncated.npz"), "wb") as f:
        f.write(data[: len(data) // 2])


def stats_echo(path, out):
    with np.load(path) as f:
        mu, sigma = f["mu"], f["sigma"]
        n = f["n"] if "n" in f.files else None
        res = f["resolution"] if "resolution" in f.files else None
    assert mu.dtype == np.float64 and sigma.dtype == np.float64, (mu.dtype, sigma.dtype)
    assert mu.ndim == 1 and sigma.shape == (mu.shape[0], mu.shape[0]), (mu.shape, sigma.shape)
    assert n is None or (n.dtype == np.int64 and n.shape == ()), n
    assert res is None or (res.dtype == np.int64 and res.shape == (2,)), res
    np.savez_compressed(out, mu=mu, sigma=sigma)
    print(json.dumps({"n": None if n is None else int(n), "resolution": None if res is None else res.tolist()}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "inception":
        inception(sys.argv[2], int(sys.argv[3]))
    elif cmd == "clean":
        clean(sys.argv[2], int(sys.argv[3]))
    elif cmd == "pil-resize":
        pil_resize(sys.argv[2])
    elif cmd == "frechet":
        frechet(sys.argv[2])
    elif cmd == "stats-write":
        stats_write(sys.argv[2])
    elif cmd == "stats-echo":
        stats_echo(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown command {cmd}")
