"""The PyTorch side of scripts/bench.sh: the same U-Net (torchcfm's UNetModel, which fm's matches weight for weight),
the same CFM loss, optimizer, EMA and data, written as a careful PyTorch user would: fused AdamW, foreach EMA, data on
the device, and on CUDA bf16 autocast, channels-last and cuDNN autotuning; eager or under torch.compile. Prints one
JSON line per measurement, as `fm bench` does.

Usage:
  bench_ref.py run --config-json CFG --mode eager|compile [--what train,euler,dopri5,nll] [--device cpu] ...
      CFG is the resolved config (`fm config --config FILE > CFG`). With --write-weights / --write-inputs it also
      writes the sampled network's weights (torchcfm names, .npz) and the problems it integrates (x0, x1, probe) for
      `fm bench --weights W --inputs I`, so that both sides solve the same ODEs.
  bench_ref.py flops --case CFG:C,H,W [--case ...] --batch B
      FLOPs of one forward pass of each network counted by torch.utils.flop_counter.FlopCounterMode (for the tests).
  bench_ref.py table RESULTS.jsonl
      The Markdown table of the measurements in RESULTS.jsonl with the ratio fm / reference.
"""
import argparse
import copy
import json
import math
import resource
import time

import numpy as np
import torch

from torchcfm_import import torchcfm_unet_module


def build_model(cfg, shape):
    """torchcfm's UNetModel for fm's model.unet section (attention resolutions are feature-map widths in fm)."""
    u = cfg["model"]["unet"]
    width = shape[2]
    UNetModel = torchcfm_unet_module().UNetModel
    return UNetModel(image_size=width, in_channels=shape[0], model_channels=u["model_channels"],
                     out_channels=shape[0], num_res_blocks=u["num_res_blocks"],
                     attention_resolutions=tuple(width // r for r in u["attention_resolutions"]),
                     dropout=u["dropout"], channel_mult=tuple(u["channel_mult"]), conv_resample=u["conv_resample"],
                     num_classes=None, num_heads=u["num_heads"], num_head_channels=u["num_head_channels"],
                     use_scale_shift_norm=u["use_scale_shift_norm"], resblock_updown=u["resblock_updown"])


def forward_flops(model, shape, batch, device="cpu"):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(batch, *shape, device=device)
    t = torch.rand(batch, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(t, x)
    return counter.get_total_flops()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mem_mib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def bench_train(cfg, args, device, base):
    tr = cfg["train"]
    shape = args.shape
    bsz = args.batch or tr["batch_size"]
    torch.manual_seed(args.seed)
    model = build_model(cfg, shape).to(device)
    cuda = device.type == "cuda"
    bf16 = cuda and tr["bf16"]
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    params = list(model.parameters())
    ema_params = list(ema.parameters())
    # The learning rate as a tensor, as a schedule that changes it every step without recompiling would need.
    opt = torch.optim.AdamW(params, lr=torch.tensor(tr["lr"]), betas=tuple(tr["betas"]), eps=tr["eps"],
                            weight_decay=tr["weight_decay"], fused=True)
    net = torch.compile(model) if args.mode == "compile" else model
    n = max(1024, 4 * bsz)
    data = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, device=device)
    hflip = cfg["data"]["hflip"]
    decay = tr["ema_decay"]
    clip = tr["grad_clip"]

    def step():
        idx = torch.randint(0, n, (bsz,), device=device)
        x1 = data[idx].float() / 127.5 - 1
        if hflip:
            flip = torch.rand(bsz, 1, 1, 1, device=device) < 0.5
            x1 = torch.where(flip, x1.flip(3), x1)
        x0 = torch.randn_like(x1)
        t = torch.rand(bsz, device=device)
        tt = t.view(-1, 1, 1, 1)
        xt = tt * x1 + (1 - tt) * x0  # the CondOT path with sigma_min 0: noise at t=0, data at t=1
        ut = x1 - x0
        if cuda:
            xt = xt.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            vt = net(t, xt)
        loss = torch.nn.functional.mse_loss(vt.float(), ut)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
        opt.step()
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        return loss

    model.train()
    t_compile = time.perf_counter()
    for _ in range(args.warmup):
        loss = step()
    sync(device)
    warm_s = time.perf_counter() - t_compile
    reset_peak(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    loss = loss.item()
    dt = (time.perf_counter() - t0) / args.steps
    flops = 3 * forward_flops(model, shape, bsz, device)
    out = dict(base, what="train", batch=bsz, steps=args.steps, bf16=bf16, ms_per_step=1e3 * dt,
               images_per_s=bsz / dt, peak_mem_mib=peak_mem_mib(device), loss=loss,
               parameters=sum(p.numel() for p in params), flops_per_step=flops, tflops_per_s=flops / dt / 1e12,
               warmup_s=warm_s)
    if args.peak_tflops:
        out["mfu"] = flops / dt / (args.peak_tflops * 1e12)
    return out


def sampling_model(cfg, args, device):
    torch.manual_seed(args.seed + 2)
    model = build_model(cfg, args.shape)
    with torch.no_grad():
        # Move every parameter (the zero-initialised output layers included) so that the field is not zero and an
        # adaptive solver has something to resolve.
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    if args.write_weights:
        np.savez(args.write_weights, **{k: v.detach().float().numpy() for k, v in model.state_dict().items()})
    return model.to(device)


def bench_solve(cfg, args, device, base, what, model, net, inputs):
    import torchdiffeq

    nfe = [0]
    reset_peak(device)
    if what == "nll":
        x1, probe = inputs["x1"], inputs["probe"]
        b = x1.shape[0]

        def f(t, state):
            nfe[0] += 1
            x = state[0]
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                v = net(t.expand(b), x)
                (vjp,) = torch.autograd.grad(v, x, probe)
            div = (vjp * probe).flatten(1).sum(1)  # Hutchinson: e^T (dv/dx) e
            return v.detach(), div

        t0 = time.perf_counter()
        # From the data at t=1 back to the noise at t=0; l(0) = -int_0^1 div v dt.
        xs, ls = torchdiffeq.odeint(f, (x1, torch.zeros(b, device=device)),
                                    torch.tensor([1.0, 0.0], device=device), rtol=args.tol, atol=args.tol,
                                    method="dopri5")
        x0, l0 = xs[-1], ls[-1]
        d = x0[0].numel()
        log_p = (-0.5 * x0.flatten(1).pow(2).sum(1) - 0.5 * d * math.log(2 * math.pi) + l0).double()
        mean = log_p.mean().item()
        dt = time.perf_counter() - t0
        return dict(base, what="nll", batch=b, nfe=nfe[0], s_per_1000=dt / b * 1000, mean_log_p=mean, tol=args.tol,
                    peak_mem_mib=peak_mem_mib(device))
    x0 = inputs["x0"]
    b = x0.shape[0]
    with torch.inference_mode():
        t0 = time.perf_counter()
        if what == "euler":
            x, k = x0, args.euler_steps
            for i in range(k):
                t = torch.full((b,), i / k, device=device)
                x = x + (1.0 / k) * net(t, x)
                nfe[0] += 1
        else:
            def f(t, x):
                nfe[0] += 1
                return net(t.expand(b), x)

            x = torchdiffeq.odeint(f, x0, torch.tensor([0.0, 1.0], device=device), rtol=args.tol, atol=args.tol,
                                   method="dopri5")[-1]
        mean = x.mean().item()
        dt = time.perf_counter() - t0
    out = dict(base, what=what, batch=b, nfe=nfe[0], images_per_s=b / dt, seconds=dt, mean_x=mean,
               peak_mem_mib=peak_mem_mib(device))
    if what == "euler":
        out["steps"] = args.euler_steps
    else:
        out["tol"] = args.tol
    return out


def run(args):
    with open(args.config_json) as f:
        cfg = json.load(f)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    impl = "torch_" + args.mode
    base = dict(impl=impl, device=str(device), threads=torch.get_num_threads())
    whats = args.what.split(",")
    for what in whats:
        if what == "train":
            print(json.dumps(bench_train(cfg, args, device, base)), flush=True)
    solves = [w for w in whats if w != "train"]
    if not solves:
        return
    model = sampling_model(cfg, args, device)
    torch.manual_seed(args.seed + 1)
    shape = args.shape
    x0 = torch.randn(args.sample_batch, *shape)
    x1 = torch.rand(args.nll_batch, *shape) * 2 - 1
    probe = torch.randint(0, 2, x1.shape).float() * 2 - 1
    if args.write_inputs:
        np.savez(args.write_inputs, x0=x0.numpy(), x1=x1.numpy(), probe=probe.numpy())
    inputs = dict(x0=x0.to(device), x1=x1.to(device), probe=probe.to(device))
    net = torch.compile(model) if args.mode == "compile" else model
    with torch.inference_mode():  # a short untimed solve: kernels chosen (and compiled), memory pooled
        x = inputs["x0"]
        for i in range(3):
            x = x + net(torch.full((x.shape[0],), i / 3, device=device), x) / 3
    for what in solves:
        print(json.dumps(bench_solve(cfg, args, device, base, what, model, net, inputs)), flush=True)


def flops(args):
    # One line per case, so that a test pays for one interpreter start.
    for case in args.case:
        path, shape = case.rsplit(":", 1)
        shape = [int(v) for v in shape.split(",")]
        with open(path) as f:
            cfg = json.load(f)
        print(int(forward_flops(build_model(cfg, shape), shape, args.batch)))


def table(args):
    rows = [json.loads(line) for line in open(args.results) if line.strip().startswith("{")]
    keyed = {}
    for r in rows:
        keyed.setdefault((r.get("label", ""), r["what"]), {}).setdefault(r["impl"], []).append(r)
    metric = {"train": ("images_per_s", "images/s"), "euler": ("images_per_s", "images/s"),
              "dopri5": ("images_per_s", "images/s"), "nll": ("s_per_1000", "s / 1000 images")}
    loads = sorted(r["load"] for r in rows if "load" in r)
    if loads:
        print(f"1-minute load average during the measurements: {loads[0]:.2f} to {loads[-1]:.2f}.")
        print()
    print("| config | measurement | fm | torch eager | torch.compile | fm / eager | fm / compile | NFE fm, eager, "
          "compile | ms/step fm, eager, compile | peak MiB fm, eager, compile | MFU fm, eager, compile |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def med(rs, key):
        v = sorted(r[key] for r in rs if key in r)
        if not v:
            return None
        return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])

    def fmt(v, d=1):
        return "-" if v is None else f"{v:.{d}f}"

    for (label, what), by in keyed.items():
        key, unit = metric[what]
        e_, c_ = med(by.get("torch_eager", []), key), med(by.get("torch_compile", []), key)
        for fm_impl in [i for i in ("fm", "fm_cuda_graph") if i in by] or ["fm"]:
            f_ = med(by.get(fm_impl, []), key)

            def ratio(ref):
                if f_ is None or ref is None:
                    return "-"
                # For a time per work (s / 1000 images) the speed-up is reference / fm.
                return f"{(ref / f_) if key == 's_per_1000' else (f_ / ref):.2f}x"

            impls = (fm_impl, "torch_eager", "torch_compile")
            col = lambda k, d=1: ", ".join(fmt(med(by.get(i, []), k), d) for i in impls)  # noqa: E731
            mfus = [med(by.get(i, []), "mfu") for i in impls]
            mfu = ", ".join("-" if m is None else f"{100 * m:.1f}%" for m in mfus)
            name = what if fm_impl == "fm" else f"{what}, fm with CUDA graph"
            print(f"| {label} | {name} ({unit}) | {fmt(f_)} | {fmt(e_)} | {fmt(c_)} | {ratio(e_)} | {ratio(c_)} | "
                  f"{col('nfe', 0)} | {col('ms_per_step')} | {col('peak_mem_mib', 0)} | {mfu} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--config-json", required=True)
    r.add_argument("--mode", choices=["eager", "compile"], default="eager")
    r.add_argument("--what", default="train")
    r.add_argument("--device", default="cpu")
    r.add_argument("--shape", type=int, nargs=3, default=[3, 32, 32])
    r.add_argument("--batch", type=int, default=0)
    r.add_argument("--warmup", type=int, default=5)
    r.add_argument("--steps", type=int, default=20)
    r.add_argument("--sample-batch", type=int, default=64)
    r.add_argument("--nll-batch", type=int, default=16)
    r.add_argument("--euler-steps", type=int, default=100)
    r.add_argument("--tol", type=float, default=1e-5)
    r.add_argument("--peak-tflops", type=float, default=0.0)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--write-weights")
    r.add_argument("--write-inputs")
    fl = sub.add_parser("flops")
    fl.add_argument("--case", action="append", required=True, help="CONFIG_JSON:C,H,W (repeatable)")
    fl.add_argument("--batch", type=int, default=1)
    t = sub.add_parser("table")
    t.add_argument("results")
    args = p.parse_args()
    {"run": run, "flops": flops, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
