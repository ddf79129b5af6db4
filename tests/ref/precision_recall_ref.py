"""Improved precision and recall (Kynkaanniemi et al. 2019) by the paper's definition, in numpy float64, for
tests/test_fid.cpp; never with fm code.

  precision_recall_ref.py OUT    random feature sets (OUT/features.npz: real_C, fake_C) and, for each case C, the
                                 k-NN radii of both sets, the membership of every point in the other set's manifold
                                 and precision and recall (OUT/precision_recall.json)

Each set's manifold is the union of balls around its points, a point's ball reaching its k-th nearest neighbour among
the other points of its set. precision = share of fake points inside the real manifold; recall = share of real points
inside the fake manifold. Distances are Euclidean, computed directly as sqrt(sum((a - b)^2)).
"""
import json
import os
import sys

import numpy as np


def distances(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def radii(x, k):
    d = distances(x, x)
    np.fill_diagonal(d, np.inf)  # a point is not its own neighbour
    return np.sort(d, axis=1)[:, k - 1]


def inside(query, x, r):
    return (distances(query, x) <= r[None, :]).any(axis=1)


def precision_recall(real, fake, k):
    r_real, r_fake = radii(real, k), radii(fake, k)
    in_real, in_fake = inside(fake, real, r_real), inside(real, fake, r_fake)
    return {"k": k, "precision": float(in_real.mean()), "recall": float(in_fake.mean()),
            "radii_real": r_real.tolist(), "radii_fake": r_fake.tolist(),
            "fake_in_real": in_real.astype(int).tolist(), "real_in_fake": in_fake.astype(int).tolist()}


def main(out):
    rng = np.random.default_rng(17)
    mix = rng.normal(0, 0.3, size=(32, 32))
    cases = {
        # Overlapping Gaussians, shifted: precision and recall both well inside (0, 1).
        "shifted": (rng.normal(0, 1, size=(120, 16)), rng.normal(0.6, 1, size=(90, 16)), 3),
        # Non-negative, correlated features far from the origin (as pool3 features are); a wider fake set.
        "relu": (np.abs(rng.normal(0, 1, size=(100, 32)) @ mix) + 5.0,
                 np.abs(rng.normal(0.2, 1.2, size=(80, 32)) @ mix) + 5.0, 3),
        # Another k, and sets barely larger than it.
        "small_k5": (rng.normal(0, 1, size=(9, 8)), rng.normal(1.2, 0.7, size=(7, 8)), 5),
    }
    arrays, ref = {}, {}
    for name, (real, fake, k) in cases.items():
        arrays[f"real_{name}"], arrays[f"fake_{name}"] = real, fake
        ref[name] = precision_recall(real, fake, k)
    np.savez(os.path.join(out, "features.npz"), **arrays)
    with open(os.path.join(out, "precision_recall.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main(sys.argv[1])
