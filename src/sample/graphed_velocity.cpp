#include "sample/graphed_velocity.h"

#include <spdlog/spdlog.h>

#include <atomic>

#include "util/cuda_graphs.h"

namespace fm {

struct GraphedVelocity::Impl {
  bool active = false;  // still aiming for (or using) the graph
  int evaluations = 0;
#ifdef FM_HAVE_CUDA_GRAPHS
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  torch::Tensor t, x;  // static inputs: each evaluation fills them
  torch::Tensor v;     // static output, written by every replay
#endif
};

namespace {
// sample runs generate() once per batch: a reason not to capture is logged once per process, not once per batch.
void warn_once(const std::string& message) {
  static std::atomic<bool> warned{false};
  if (!warned.exchange(true)) spdlog::warn("sample.cuda_graph: {}", message);
}
}  // namespace

GraphedVelocity::GraphedVelocity(Velocity v, bool enabled, const torch::Device& device)
    : v_(std::move(v)), impl_(std::make_unique<Impl>()) {
  if (!enabled || !device.is_cuda()) return;  // the flag is for CUDA; elsewhere there is nothing to replay
#ifndef FM_HAVE_CUDA_GRAPHS
  warn_once("this fm was built without CUDA graph support; sampling runs eagerly");
  return;
#endif
  impl_->active = true;
}

GraphedVelocity::~GraphedVelocity() = default;

bool GraphedVelocity::graphed() const {
#ifdef FM_HAVE_CUDA_GRAPHS
  return impl_->graph != nullptr;
#else
  return false;
#endif
}

torch::Tensor GraphedVelocity::operator()(double t, const torch::Tensor& x) {
  auto& s = *impl_;
#ifdef FM_HAVE_CUDA_GRAPHS
  if (s.graph && x.sizes() == s.x.sizes()) {
    s.x.copy_(x, /*non_blocking=*/true);
    s.t.fill_(t);
    s.graph->replay();
    return s.v.clone();
  }
  if (s.active && s.evaluations >= kWarmupEvaluations) {
    // Captured on a side stream (CUDA graphs cannot capture the legacy default stream), reading inputs that outlive
    // it. Capture only records the work, so this evaluation is the first replay.
    s.active = false;  // one attempt per solve
    s.x = x.clone();
    s.t = torch::full({x.size(0)}, t, x.options());
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    const std::string failure =
        capture(*graph, x.device().index(), [&] { s.v = v_(s.t, s.x); }, /*register_generator=*/false);
    if (!failure.empty()) {
      warn_once("capturing the network failed, sampling eagerly: " + failure);
      s.x = s.t = s.v = torch::Tensor();
      return v_(torch::full({x.size(0)}, t, x.options()), x);
    }
    s.graph = std::move(graph);
    spdlog::debug("sample.cuda_graph: the network is captured after {} eager evaluations", s.evaluations);
    s.graph->replay();
    return s.v.clone();
  }
  if (s.active) {
    // Warm-up on the side stream the capture will use.
    const auto index = x.device().index();
    auto side = c10::cuda::getStreamFromPool(false, index);
    auto main = c10::cuda::getCurrentCUDAStream(index);
    wait_for(side, main);
    torch::Tensor v;
    {
      c10::cuda::CUDAStreamGuard guard(side);
      v = v_(torch::full({x.size(0)}, t, x.options()), x);
    }
    wait_for(main, side);
    // The result was made on the side stream and is used on the main one: its memory must not be reused by the side
    // stream before the main stream is done with it.
    v.record_stream(main);
    ++s.evaluations;
    return v;
  }
#endif
  return v_(torch::full({x.size(0)}, t, x.options()), x);
}

}  // namespace fm
