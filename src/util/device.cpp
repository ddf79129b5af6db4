#include "util/device.h"

#include <sys/resource.h>

#include <cstdio>

#if __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#include <ATen/cuda/CUDAContext.h>
#define FM_HAVE_CUDA_HEADERS 1
#endif

#include "util/error.h"

namespace fm {

bool is_device_spec(const std::string& spec) {
  if (spec == "auto" || spec == "cpu" || spec == "cuda") return true;
  if (spec.rfind("cuda:", 0) != 0 || spec.size() == 5 || spec.size() > 8) return false;
  return spec.find_first_not_of("0123456789", 5) == std::string::npos;
}

torch::Device resolve_device(const std::string& spec) {
  if (spec == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (spec == "cpu") return torch::kCPU;
  if (spec.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) throw InputError("device '" + spec + "': no CUDA device is available");
    int64_t index = 0;
    if (spec.size() > 4) {
      if (spec[4] != ':') throw InputError("device '" + spec + "': expected cuda or cuda:N");
      try {
        size_t used = 0;
        index = std::stoll(spec.substr(5), &used);
        if (used != spec.size() - 5) throw std::invalid_argument("");
      } catch (const std::logic_error&) {
        throw InputError("device '" + spec + "': expected cuda or cuda:N");
      }
    }
    auto count = static_cast<int64_t>(torch::cuda::device_count());
    if (index < 0 || index >= count)
      throw InputError("device '" + spec + "': only " + std::to_string(count) + " CUDA device(s)");
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  throw InputError("device '" + spec + "': expected auto, cpu, cuda or cuda:N");
}

void configure_backend(const torch::Device& device) {
  if (!device.is_cuda()) return;
  auto& ctx = at::globalContext();
  ctx.setFloat32MatmulPrecision("high");  // TF32
  ctx.setAllowTF32CuDNN(true);
  ctx.setBenchmarkCuDNN(true);
}

double peak_memory_mib(const torch::Device& device) {
#ifdef FM_HAVE_CUDA_HEADERS
  if (device.is_cuda()) {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return static_cast<double>(
               stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak) /
           (1024.0 * 1024.0);
  }
#endif
  struct rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

std::string device_name(int64_t index) {
#ifdef FM_HAVE_CUDA_HEADERS
  if (torch::cuda::is_available()) return at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index))->name;
#endif
  return "";
}

std::string cuda_device_summary(int64_t index) {
#ifdef FM_HAVE_CUDA_HEADERS
  if (torch::cuda::is_available()) {
    const auto* p = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index));
    char memory[32];
    std::snprintf(memory, sizeof memory, "%.1f GiB", static_cast<double>(p->totalGlobalMem) / (1 << 30));
    return std::string(p->name) + ", compute capability " + std::to_string(p->major) + "." +
           std::to_string(p->minor) + ", " + memory;
  }
#endif
  return "";
}

}  // namespace fm
