#pragma once
#include <string>

#include <torch/torch.h>

namespace fm {

// Whether `spec` is a device name fm understands: auto, cpu, cuda or cuda:N (whether that device exists aside).
bool is_device_spec(const std::string& spec);

// "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N"; throws InputError when the device is not there.
torch::Device resolve_device(const std::string& spec);

// On CUDA: TF32 matmuls and convolutions, cuDNN autotuning. No-op on CPU.
void configure_backend(const torch::Device& device);

// Peak memory in MiB: allocated device memory on CUDA, the process's peak resident set on CPU.
double peak_memory_mib(const torch::Device& device);

// The marketing name of CUDA device `index` ("NVIDIA H200"), or "" where unknown.
std::string device_name(int64_t index);

// CUDA device `index` as `fm --version` shows it: "NVIDIA H200, compute capability 9.0, 139.8 GiB"; "" without CUDA.
std::string cuda_device_summary(int64_t index);

}  // namespace fm
