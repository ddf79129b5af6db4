"""PyTorch's side of TrainEquivalence (tests/test_train_equivalence.cpp): the recipe fm trains, run step for step
with torchcfm's U-Net and flow matcher, torch.optim.AdamW, torch.nn.utils.clip_grad_norm_, a LambdaLR schedule and
torchcfm's EMA, fed the batches, noise, times and labels fm drew.

Usage: train_equivalence.py DIR < stream. DIR holds recipe.json (the network's UNetModelWrapper arguments, the
optimisation settings, the parameter order and the runs) and init.npz (the initial weights under torchcfm's names).
stdin carries, for each run and each step, fm's draws (x0, x1, t as float64, labels as int64) and then fm's weights
and EMA after the step (float64, flattened in the recipe's order). For a run of precision P (float64, float32, or
bf16: float32 weights with the network under bf16 autocast) the script trains the recipe in P and, unless P is
float64, in float64 beside it (the exact trajectory), and writes DIR/ref_<draws>.npz: per step, lr; loss_Q and
grad_norm_Q of each trajectory Q; WHICH_maxdiff_Q and WHICH_l2_fm_Q, fm's largest and L2 distance from trajectory Q;
WHICH_l2_P_float64, trajectory P's L2 distance from float64; WHICH_norm, float64's L2 norm (WHICH: weights, ema).
Exits with 77 when torchcfm is not installed.
"""
import collections
import copy
import json
import math
import os
import sys
import types

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from torchcfm_import import torchcfm_unet_module  # noqa: E402

unet = torchcfm_unet_module()
try:
    import ot  # noqa: F401  (torchcfm's flow matchers import POT for their OT couplings, which this run does not use)
except ImportError:
    sys.modules["ot"] = types.ModuleType("ot")
from torchcfm.conditional_flow_matching import TargetConditionalFlowMatcher  # noqa: E402


def lift_float32_casts():
    """torchcfm's U-Net rounds to float32 in three places whatever its dtype: its input (UNetModel.dtype), GroupNorm32
    and the attention's softmax. Float64 inputs keep float64 through the last two here (the first is the model's
    attribute); other dtypes take torchcfm's own code. The time embedding stays in float32, as ADM (and fm) compute
    it, cast to the weights' dtype."""
    nn_mod = sys.modules["torchcfm.models.unet.nn"]
    group_norm, attention, embedding = (nn_mod.GroupNorm32.forward, unet.QKVAttentionLegacy.forward,
                                        nn_mod.timestep_embedding)

    def group_norm_f64(self, x):
        if x.dtype != torch.float64:
            return group_norm(self, x)
        return torch.nn.functional.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def attention_f64(self, qkv):  # QKVAttentionLegacy.forward with the softmax in float64
        if qkv.dtype != torch.float64:
            return attention(self, qkv)
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
        return torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)

    nn_mod.GroupNorm32.forward = group_norm_f64
    unet.QKVAttentionLegacy.forward = attention_f64
    unet.timestep_embedding = lambda t, dim, max_period=10000: embedding(t, dim, max_period).to(
        torch.float64 if t.dtype == torch.float64 else torch.float32)


def lr_scale(r, step):
    """Linear warmup over warmup_steps (step s trains at (s + 1) / warmup of lr), then cosine decay to final_lr_scale
    at the last step."""
    warmup, steps, final = r["warmup_steps"], r["steps"], r["final_lr_scale"]
    if step < warmup:
        return (step + 1) / warmup
    progress = min(max((step - warmup) / max(1, steps - 1 - warmup), 0.0), 1.0)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


class Trajectory:
    """The recipe trained in one precision."""

    def __init__(self, r, init, precision, device):
        self.r, self.precision, self.device = r, precision, device
        self.dtype = torch.float64 if precision == "float64" else torch.float32
        model = unet.UNetModelWrapper(**r["unet"])
        if self.dtype == torch.float64:
            model = model.double()
            model.dtype = torch.float64
        model.load_state_dict({k: torch.from_numpy(v) for k, v in init.items()})
        # fm's null label (classifier-free guidance's unconditional model) is a padding index: zero, never trained.
        model.label_emb.padding_idx = r["null_label"]
        self.model = model.to(device)
        self.ema = copy.deepcopy(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=r["lr"], betas=tuple(r["betas"]), eps=r["eps"],
                                     weight_decay=r["weight_decay"], foreach=False, fused=False)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_scale(r, s))
        self.flow = TargetConditionalFlowMatcher(sigma=r["sigma_min"])
        self.params = dict(self.model.named_parameters())
        self.ema_params = dict(self.ema.named_parameters())

    def step(self, x0, x1, t, y):
        """One step; returns the learning rate it used, the loss and the gradient norm before clipping."""
        x0, x1, t = (v.to(self.device, self.dtype) for v in (x0, x1, t))
        y = y.to(self.device) if y is not None else None
        xt = self.flow.sample_xt(x0, x1, t, x0)
        ut = self.flow.compute_conditional_flow(x0, x1, t, xt)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            vt = self.model(t, xt, y)
        loss = torch.mean((vt.to(self.dtype) - ut) ** 2)
        lr = self.opt.param_groups[0]["lr"]
        self.opt.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.r["grad_clip"])
        self.opt.step()
        self.sched.step()
        decay = self.r["ema_decay"]
        with torch.no_grad():  # torchcfm's ema(): target = decay * target + (1 - decay) * source
            for k, p in self.params.items():
                self.ema_params[k].copy_(self.ema_params[k] * decay + p * (1 - decay))
        return lr, loss.item(), grad_norm.item()

    def flat(self, which):
        params = self.params if which == "weights" else self.ema_params
        return torch.cat([params[k].detach().reshape(-1).double().cpu() for k in self.r["names"]])


def read(n, dtype):
    buf = sys.stdin.buffer.read(n * 8)
    if len(buf) != n * 8:
        sys.exit(f"train_equivalence.py: the stream ended early ({len(buf)} of {n * 8} bytes)")
    return torch.from_numpy(np.frombuffer(buf, dtype=dtype).copy())


def run(r, init, spec, device):
    p = spec["precision"]
    trajectories = {q: Trajectory(r, init, q, device) for q in dict.fromkeys([p, "float64"])}
    batch, shape = r["batch"], r["shape"]
    n_x, n_p = batch * int(np.prod(shape)), sum(init[k].size for k in r["names"])
    out = collections.defaultdict(list)
    for _ in range(r["steps"]):
        x0 = read(n_x, np.float64).view(batch, *shape)
        x1 = read(n_x, np.float64).view(batch, *shape)
        t = read(batch, np.float64)
        y = read(batch, np.int64)
        fm = {"weights": read(n_p, np.float64), "ema": read(n_p, np.float64)}
        for q, traj in trajectories.items():
            lr, loss, grad_norm = traj.step(x0, x1, t, y)
            out["loss_" + q].append(loss)
            out["grad_norm_" + q].append(grad_norm)
        out["lr"].append(lr)
        for which, mine in fm.items():
            exact = trajectories["float64"].flat(which)
            for q, traj in trajectories.items():
                d = mine - traj.flat(which)
                out[f"{which}_maxdiff_{q}"].append(d.abs().max().item())
                out[f"{which}_l2_fm_{q}"].append(d.norm().item())
            out[f"{which}_l2_{p}_float64"].append((trajectories[p].flat(which) - exact).norm().item())
            out[f"{which}_norm"].append(exact.norm().item())
    np.savez(os.path.join(r["dir"], f"ref_{spec['draws']}.npz"), **{k: np.array(v) for k, v in out.items()})


def main():
    d = sys.argv[1]
    with open(os.path.join(d, "recipe.json")) as f:
        r = json.load(f)
    r["dir"] = d
    device = torch.device(r["device"])
    if device.type == "cuda":  # fm train's backend settings (util/device.h)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    init = dict(np.load(os.path.join(d, "init.npz")))
    lift_float32_casts()
    for spec in r["runs"]:
        run(r, init, spec, device)


if __name__ == "__main__":
    main()
