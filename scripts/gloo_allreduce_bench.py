"""All-reduce bandwidth of c10d's Gloo backend (the one fm uses on the CPU) between the ranks torchrun starts.

    torchrun --standalone --nproc-per-node 2 scripts/gloo_allreduce_bench.py [NUMEL] [REPEATS]

NUMEL defaults to the gradient of the paper's CIFAR-10 U-Net (configs/cifar10.json: 142,861,315 float32 parameters,
571 MB). Prints, on rank 0, the mean time of one all-reduce and the bandwidths NCCL's tests report: algbw = bytes /
time, busbw = algbw * 2 (N - 1) / N (what each link carries in a ring all-reduce).
"""
import os
import sys
import time

import torch
import torch.distributed as dist

numel = int(sys.argv[1]) if len(sys.argv) > 1 else 142_861_315
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
dist.init_process_group("gloo")
n = dist.get_world_size()
x = torch.ones(numel)
dist.all_reduce(x)  # warm-up: connections and buffers
dist.barrier()
t0 = time.perf_counter()
for _ in range(repeats):
    dist.all_reduce(x)
dist.barrier()
dt = (time.perf_counter() - t0) / repeats
if dist.get_rank() == 0:
    algbw = numel * 4 / dt / 1e9
    print(f"gloo all_reduce of {numel * 4 / 1e6:.0f} MB over {n} ranks: {dt * 1e3:.0f} ms, algbw {algbw:.2f} GB/s, "
          f"busbw {algbw * 2 * (n - 1) / n:.2f} GB/s (threads per rank: {torch.get_num_threads()})")
dist.destroy_process_group()
