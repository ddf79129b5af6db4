#!/usr/bin/env python3
"""Writes the seed corpus for the libFuzzer harnesses in fuzz/ (one folder per harness) from scratch, so that no binary
seed is committed. Small valid files of each kind plus a few near misses; the fuzzers mutate from there.

    .venv/bin/python scripts/make_fuzz_corpus.py OUT_DIR [--fm build-asan/fm]

--fm: an fm binary to write a checkpoint seed with (a two-step toy run); without it the checkpoint corpus is empty.
"""
import argparse
import io
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
rng = np.random.default_rng(0)


def npy_bytes(a, version=None):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), version=version, allow_pickle=False)
    return buf.getvalue()


def npz_bytes(compressed=False, **arrays):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def write(folder, name, data):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def npy(out):
    d = out / "fuzz_npy"
    write(d, "u8", npy_bytes(rng.integers(0, 256, (3, 4), dtype=np.uint8)))
    write(d, "f32", npy_bytes(rng.standard_normal((2, 3, 2)).astype(np.float32)))
    write(d, "f64_v2", npy_bytes(rng.standard_normal(5), version=(2, 0)))
    write(d, "i64_scalar", npy_bytes(np.int64(7)))
    write(d, "i32_empty", npy_bytes(np.zeros((0, 3), np.int32)))
    write(d, "bool", npy_bytes(np.array([True, False, True])))
    write(d, "f16_v3", npy_bytes(np.ones((2, 2), np.float16), version=(3, 0)))
    write(d, "i8", npy_bytes(np.arange(-3, 3, dtype=np.int8)))
    write(d, "fortran", npy_bytes(np.asfortranarray(np.ones((2, 3), np.float32))))
    write(d, "complex", npy_bytes(np.ones(2, np.complex64)))


def npz(out):
    d = out / "fuzz_npz"
    write(d, "stored", npz_bytes(arr_0=rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8), labels=np.array([0, 1])))
    write(d, "deflated", npz_bytes(True, a=np.arange(20, dtype=np.float32), b=np.zeros((3, 3))))
    write(d, "empty_archive", npz_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("big.npy", "w", force_zip64=True) as f:  # zip64 extra fields, as numpy writes large members
            f.write(npy_bytes(np.arange(100, dtype=np.int64)))
    write(d, "zip64", buf.getvalue())


def config(out):
    d = out / "fuzz_config"
    for p in sorted((ROOT / "configs").glob("*.json")):
        write(d, p.stem, p.read_bytes())
    write(d, "overrides", (ROOT / "configs" / "toy2d.json").read_text() +
          "\0train.lr=1e-4\nmodel.unet.channel_mult=1,2\ndata.path=toy:moons\ntrain.bf16=false")
    write(d, "minimal", "{}")
    write(d, "bad_type", json.dumps({"train": {"steps": "many"}}))


def cifar10(out):
    d = out / "fuzz_cifar10"
    rec = rng.integers(0, 256, (3, 3073), dtype=np.uint8)
    rec[:, 0] = [0, 9, 4]
    write(d, "three_records", rec.tobytes())
    write(d, "truncated", rec.tobytes()[:4000])


def imagenet32(out):
    d = out / "fuzz_imagenet32"
    data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    write(d, "stored", npz_bytes(data=data, labels=np.array([1, 1000])))
    write(d, "deflated_with_mean", npz_bytes(True, data=data, labels=np.array([5, 6], np.int32),
                                             mean=np.zeros(3072)))
    write(d, "empty", npz_bytes(data=np.zeros((0, 3072), np.uint8), labels=np.zeros(0, np.int64)))


def image(out):
    d = out / "fuzz_image"
    from PIL import Image  # Pillow comes with torchvision (pytorch-fid) in the venv

    px = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    for mode, fmt, opt in [("RGB", "PNG", 0), ("L", "PNG", 2), ("RGBA", "PNG", 6), ("P", "PNG", 3),
                           ("RGB", "JPEG", 1), ("L", "JPEG", 7), ("RGB", "BMP", 2), ("RGB", "GIF", 0)]:
        im = Image.fromarray(px).convert(mode)
        buf = io.BytesIO()
        im.save(buf, fmt)
        write(d, f"{mode}_{fmt}_{opt}", bytes([opt]) + buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG", progressive=True)
    write(d, "progressive_jpeg", bytes([5]) + buf.getvalue())


def fid_stats(out):
    d = out / "fuzz_fid_stats"
    x = rng.standard_normal((20, 8))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    write(d, "with_n", npz_bytes(mu=mu, sigma=sigma, n=np.int64(20)))
    write(d, "float32_compressed", npz_bytes(True, mu=mu.astype(np.float32), sigma=sigma.astype(np.float32)))
    write(d, "asymmetric", npz_bytes(mu=mu, sigma=sigma + np.triu(np.ones((8, 8)), 1)))


def safetensors(out):
    d = out / "fuzz_safetensors"
    from safetensors.numpy import save  # the reference writer, from the venv

    write(d, "two_f32", save({"w": rng.standard_normal((3, 2)).astype(np.float32), "b": np.zeros(2, np.float32)},
                             metadata={"fm_step": "7"}))
    write(d, "dtypes", save({"u8": np.arange(4, dtype=np.uint8), "i64": np.arange(2, dtype=np.int64),
                             "f16": np.ones((2, 2), np.float16), "scalar": np.array(1.5, np.float64),
                             "empty": np.zeros((0, 3), np.float32)}))
    write(d, "no_tensors", save({}))


def torch_file(out):
    d = out / "fuzz_torch_file"
    import collections
    import torch  # the reference writer: the venv's torch.save, both layouts

    sd = collections.OrderedDict(w=torch.randn(2, 3), b=torch.zeros(3, dtype=torch.float64),
                                 n=torch.tensor(4, dtype=torch.int64))
    ckpt = {"net_model": sd, "ema_model": collections.OrderedDict(w=sd["w"].clone()), "step": 12,
            "optim": {"lr": 2e-4, "betas": (0.9, 0.999), "names": ["a", "b"], "flag": True, "none": None}}
    for name, obj in [("state_dict", sd), ("torchcfm_ckpt", ckpt), ("view", {"v": torch.arange(10.0)[2:6]})]:
        for legacy in (False, True):
            buf = io.BytesIO()
            torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
            write(d, name + ("_legacy" if legacy else "_zip"), buf.getvalue())


def checkpoint(out, fm):
    d = out / "fuzz_checkpoint"
    d.mkdir(parents=True, exist_ok=True)
    if not fm:
        return
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [fm, "train", "--config", str(ROOT / "configs" / "toy2d.json"), "--out", tmp, "--device", "cpu",
               "--set", "train.steps=2", "train.batch_size=8", "train.ckpt_every=1", "train.log_every=1",
               "model.mlp.hidden=8", "model.mlp.depth=1", "sample.n=16", "sample.steps=2"]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        ckpts = sorted(pathlib.Path(tmp).rglob("ckpt_*.pt"))
        if r.returncode != 0 or not ckpts:
            sys.exit(f"make_fuzz_corpus: could not write a checkpoint seed with {fm}:\n{r.stdout}{r.stderr}")
        write(d, "toy_mlp", ckpts[-1].read_bytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--fm", help="fm binary used to write a checkpoint seed")
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    for make in (npy, npz, config, cifar10, imagenet32, image, fid_stats, safetensors, torch_file):
        make(out)
    checkpoint(out, a.fm)
    for sub in sorted(out.iterdir()):
        files = list(sub.iterdir())
        print(f"{sub.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
