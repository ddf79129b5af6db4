#!/usr/bin/env python3
"""Writes the seed corpus for the libFuzzer harnesses in fuzz/ (one folder per harness) from scratch, so that no binary
seed is committed. Small valid files of each kind plus a few near misses; the fuzzers mutate from there.

    .venv/bin/python scripts/make_fuzz_corpus.py OUT_DIR [--fm build-asan/fm]

--fm: an fm binary to write a checkpoint and a post-hoc EMA snapshot seed with (a two-step toy run); without it those
corpora are empty.
"""
import argparse
import io
import json
import os
import pathlib
import struct
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


def pairs(out):
    d = out / "fuzz_pairs"
    x0 = rng.standard_normal((3, 2)).astype(np.float32)
    write(d, "points", npz_bytes(x0=x0, x1=x0 + 1))
    write(d, "images_labels", npz_bytes(True, x0=rng.standard_normal((2, 3, 4, 4)).astype(np.float32),
                                        x1=rng.standard_normal((2, 3, 4, 4)).astype(np.float32),
                                        labels=np.array([0, 9])))
    write(d, "float64_mismatch", npz_bytes(x0=np.zeros((2, 2)), x1=np.zeros((3, 2))))
    write(d, "nan", npz_bytes(x0=x0, x1=np.full((3, 2), np.nan, np.float32)))


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
    # Hand-made headers: sizes whose byte count wraps to 0 (2^61 F64, 2^62 x 4 before a 0), a name with an invalid UTF-8
    # byte and one with control characters.
    for name, shape in [("wrap_2pow61", [2**61]), ("wrap_before_0", [2**62, 4, 0]), ("int64_max_x2", [2**63 - 1, 2])]:
        write(d, name, safetensors_bytes({"w": {"dtype": "F64", "shape": shape, "data_offsets": [0, 0]}}))
    write(d, "invalid_utf8_name", safetensors_bytes(b'{"w\xff":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}',
                                                    b"\0" * 4))
    write(d, "control_name", safetensors_bytes({"\x1b[2J\n": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}},
                                               b"ab"))


def safetensors_bytes(header, data=b""):
    """A safetensors file of `header` (a dict, or the raw JSON bytes) and `data`."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


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
    torch_file_structures(d)


# Hand-made torch.save files: pickle opcodes as Python's pickletools names them, in the zip and the legacy layout.
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19."


def pk_str(s):
    return b"X" + struct.pack("<I", len(s)) + s.encode()


def pk_int(v):
    return b"\x8a\x08" + struct.pack("<q", v)  # LONG1, 8 bytes


def pk_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def pk_tuple(values):
    return b"(" + b"".join(pk_int(v) for v in values) + b"t"


def pk_storage_id(key, numel, storage="FloatStorage"):
    """torch.save's persistent id of a storage: ('storage', torch.<storage>, key, 'cpu', numel)."""
    return b"(" + pk_str("storage") + pk_global("torch", storage) + pk_str(key) + pk_str("cpu") + pk_int(numel) + b"t"


def pk_tensor(storage, offset, size, stride):
    """torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()); `storage` pushes it."""
    return (pk_global("torch._utils", "_rebuild_tensor_v2") + b"(" + storage + pk_int(offset) + pk_tuple(size) +
            pk_tuple(stride) + b"\x89" + pk_global("collections", "OrderedDict") + b")R" + b"tR")


def pk_dict_w(value):
    return b"}(" + pk_str("w") + value + b"u"


def pk_program(ops):
    return b"\x80\x02" + ops + b"."


def torch_zip(ops, storages=(), compress=False):
    """A zip-layout torch.save file: data.pkl holds `ops`, data/<key> each (key, bytes) of `storages`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pk_program(ops))
        z.writestr("archive/byteorder", "little")
        for key, data in storages:
            z.writestr("archive/data/" + key, data, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def torch_legacy(ops, storages=()):
    """A legacy-layout torch.save file: magic, version 1001, sys_info, the object, its storage keys and their data;
    `storages` holds (key, numel, bytes)."""
    keys = b"(" + b"".join(pk_str(k) for k, _, _ in storages) + b"l"
    data = b"".join(struct.pack("<q", n) + b for _, n, b in storages)
    return (LEGACY_MAGIC + pk_program(b"M\xe9\x03") + pk_program(b"}(" + pk_str("little_endian") + b"\x88u") +
            pk_program(ops) + pk_program(keys) + data)


def torch_file_structures(d):
    """Structures that small mutations of torch.save's own files do not reach: deep nesting, containers that contain
    themselves, a memoized persistent id referenced many times, sizes whose products overflow, a deflated storage."""
    floats = b"\0" * 16

    def both(name, ops, storages=()):
        write(d, name + "_zip", torch_zip(ops, [(k, b) for k, _, b in storages]))
        write(d, name + "_legacy", torch_legacy(ops, storages))

    both("deep_lists", b"]" * 200000 + b"a" * 199999)
    both("deep_tuples", b"N" + b"\x85" * 100000)
    both("self_append", b"]q\x00h\x00a")
    both("cycle_of_two", b"]q\x00]q\x01h\x00aa")
    view = pk_storage_id("0", 4) + b"Q"
    both("overflow_view", pk_dict_w(pk_tensor(view, 0, [3, 6148914691236517206], [1, 0])), [("0", 4, floats)])
    both("huge_stride", pk_dict_w(pk_tensor(view, 0, [2, 2], [2**62, 1])), [("0", 4, floats)])
    huge = pk_dict_w(pk_tensor(pk_storage_id("0", 2**61, "DoubleStorage") + b"Q", 0, [2**61], [1]))
    write(d, "huge_storage_zip", torch_zip(huge, [("0", b"")]))
    write(d, "huge_storage_legacy", torch_legacy(huge, [("0", 2**61, b"")]))
    # A dict of 20000 tensors over one 256 KiB storage, its persistent id memoized once (memo 0) and fetched for each,
    # as are the rebuild function (1), size (2), stride (3) and OrderedDict (4): about 30 bytes a tensor, 860 KB in all.
    # A reader that copies the storage for each reference asks for 5 GB, past the harness's memory limit.
    memo = (pk_storage_id("0", 65536) + b"q\x00" + pk_global("torch._utils", "_rebuild_tensor_v2") + b"q\x01" +
            pk_tuple([65536]) + b"q\x02" + pk_tuple([1]) + b"q\x03" + pk_global("collections", "OrderedDict") +
            b"q\x04" + b"00000")
    tensor = b"h\x01(h\x00QK\x00h\x02h\x03\x89h\x04)RtR"
    items = b"".join(pk_str(f"t{i}") + tensor for i in range(20000))
    write(d, "memoized_storage_id_zip", torch_zip(memo + b"}(" + items + b"u", [("0", b"\0" * (256 << 10))]))
    deflated = pk_dict_w(pk_tensor(pk_storage_id("0", 1 << 20) + b"Q", 0, [1 << 20], [1]))
    write(d, "deflated_storage_zip", torch_zip(deflated, [("0", b"\0" * (4 << 20))], compress=True))


def checkpoint(out, fm):
    d = out / "fuzz_checkpoint"
    d.mkdir(parents=True, exist_ok=True)
    snapshots = out / "fuzz_phema_snapshot"
    snapshots.mkdir(parents=True, exist_ok=True)
    if not fm:
        return
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [fm, "train", "--config", str(ROOT / "configs" / "toy2d.json"), "--out", tmp, "--device", "cpu",
               "--set", "train.steps=2", "train.batch_size=8", "train.ckpt_every=1", "train.log_every=1",
               "model.mlp.hidden=8", "model.mlp.depth=1", "sample.n=16", "sample.steps=2",
               "train.ema_snapshot_every=1"]
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        ckpts = sorted(pathlib.Path(tmp).rglob("ckpt_*.pt"))
        if r.returncode != 0 or not ckpts:
            sys.exit(f"make_fuzz_corpus: could not write a checkpoint seed with {fm}:\n{r.stdout}{r.stderr}")
        write(d, "toy_mlp", ckpts[-1].read_bytes())
        snaps = sorted(pathlib.Path(tmp).rglob("phema_*.pt"))
        if not snaps:
            sys.exit(f"make_fuzz_corpus: {fm} wrote no post-hoc EMA snapshot seed")
        write(snapshots, "toy_mlp", snaps[-1].read_bytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--fm", help="fm binary used to write a checkpoint seed")
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    for make in (npy, npz, config, cifar10, imagenet32, pairs, image, fid_stats, safetensors, torch_file):
        make(out)
    checkpoint(out, a.fm)
    for sub in sorted(out.iterdir()):
        files = list(sub.iterdir())
        print(f"{sub.name}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main()
