"""Reference for the dopri5 test: torchdiffeq's dopri5 on a nonlinear 2-D ODE, printed as JSON.

Usage: dopri5_ref.py ATOL RTOL
"""
import json
import sys

import torch
from torchdiffeq import odeint

torch.set_default_dtype(torch.float64)
atol, rtol = float(sys.argv[1]), float(sys.argv[2])
nfe = 0


def f(t, y):
    # Van der Pol oscillator (mu = 1) with a time-dependent forcing, so nothing about it is special to a method.
    global nfe
    nfe += 1
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, (1 - x * x) * v - x + 0.3 * torch.cos(t)], -1)


y0 = torch.tensor([[2.0, 0.0], [0.5, -1.0]])
t = torch.tensor([0.0, 3.0])
y = odeint(f, y0, t, method="dopri5", atol=atol, rtol=rtol)[-1]
print(json.dumps({"y": y.flatten().tolist(), "nfe": nfe}))
