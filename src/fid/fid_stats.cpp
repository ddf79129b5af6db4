#include "fid/fid_stats.h"

#include <chrono>
#include <cstdio>
#include <optional>
#include <set>

#include "io/npy.h"
#include "util/error.h"
#include "dist/rank_runner.h"

namespace fm {

std::string resolution_name(const std::vector<int64_t>& resolution) {
  if (resolution.size() != 2) return "unknown";
  return std::to_string(resolution[0]) + "x" + std::to_string(resolution[1]);
}

void FeatureMoments::add(const torch::Tensor& features) {
  TORCH_CHECK(features.dim() == 2, "FeatureMoments: expected [B, D] features, got ", features.sizes());
  if (features.size(0) == 0) return;
  auto x = features.to(torch::kFloat64);
  if (!shift_.defined()) {
    shift_ = x.mean(0);
    sum_ = torch::zeros_like(shift_);
    outer_ = torch::zeros({x.size(1), x.size(1)}, x.options());
  }
  TORCH_CHECK(x.size(1) == shift_.size(0), "FeatureMoments: feature size changed from ", shift_.size(0), " to ",
              x.size(1));
  auto d = x - shift_;
  sum_ += d.sum(0);
  outer_.addmm_(d.t(), d);
  n_ += x.size(0);
}

FidStats FeatureMoments::finish() const {
  if (n_ < 2) throw InputError("FID statistics need at least 2 images, got " + std::to_string(n_));
  auto m = sum_ / static_cast<double>(n_);
  auto cov = (outer_ - static_cast<double>(n_) * torch::outer(m, m)) / static_cast<double>(n_ - 1);
  FidStats s;
  s.mu = (shift_ + m).cpu();
  s.sigma = (0.5 * (cov + cov.t())).cpu();  // exactly symmetric, whatever order the matmul summed in
  s.n = n_;
  return s;
}

namespace {
// FID is defined in float32. PyTorch lets cuDNN convolutions (and, when asked, cuBLAS matmuls) use TF32 on Ampere and
// later, which moves the features by ~1e-3; this turns both off for the feature pass and restores the caller's choice.
class StrictFloat32Guard {
 public:
  StrictFloat32Guard() : cudnn_(at::globalContext().allowTF32CuDNN()), matmul_(at::globalContext().float32MatmulPrecision()) {
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setFloat32MatmulPrecision("highest");
  }
  ~StrictFloat32Guard() {
    at::globalContext().setAllowTF32CuDNN(cudnn_);
    at::globalContext().setFloat32MatmulPrecision(matmul_ == at::Float32MatmulPrecision::HIGHEST ? "highest"
                                                  : matmul_ == at::Float32MatmulPrecision::HIGH  ? "high"
                                                                                                 : "medium");
  }
  StrictFloat32Guard(const StrictFloat32Guard&) = delete;
  StrictFloat32Guard& operator=(const StrictFloat32Guard&) = delete;

 private:
  bool cudnn_;
  at::Float32MatmulPrecision matmul_;
};
}  // namespace

FeatureResult compute_fid_features(FidInception& net, const torch::Tensor& images, const FeatureOptions& opt) {
  if (images.dim() != 4 || (images.size(1) != 3 && images.size(1) != 1) || images.scalar_type() != torch::kUInt8)
    throw InputError("FID features: expected uint8 images [N, 3, H, W] (or 1 channel), got " +
                     std::string(c10::toString(images.scalar_type())) + " " + c10::str(images.sizes()));
  if (opt.batch < 1) throw InputError("FID features: --batch must be >= 1");
  torch::NoGradGuard no_grad;
  std::optional<StrictFloat32Guard> fp32;
  if (net->Conv2d_1a_3x3->conv->weight.is_cuda()) fp32.emplace();
  net->eval();
  const int64_t n = images.size(0);
  dist::World& w = opt.world ? *opt.world : dist::this_process_only();
  const auto feature_options = net->Conv2d_1a_3x3->conv->weight.options();
  // Each rank passes its share of the batches through the network; every rank adds the gathered features batch by
  // batch, in image order, as one process adds its own, so the statistics are the same bytes.
  auto body = [&](const ItemRange& b) -> dist::NamedTensors {
    if (b.empty()) return {{"features", torch::empty({0, FidInceptionImpl::kFeatures}, feature_options)}};
    auto x = images.slice(0, b.first, b.first + b.count);
    if (x.size(1) == 1) x = x.expand({-1, 3, -1, -1});
    return {{"features", net->forward(x, opt.resize)}};
  };
  FeatureMoments moments;
  std::vector<torch::Tensor> kept;
  auto t0 = std::chrono::steady_clock::now();
  auto sink = [&](const ItemRange& done, const std::vector<torch::Tensor>& g) {
    for (int64_t i = 0; i < done.count; i += opt.batch)
      moments.add(g[0].slice(0, i, std::min(done.count, i + opt.batch)));
    if (opt.keep_features && w.is_main()) kept.push_back(g[0].cpu());
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    char rate[48];
    std::snprintf(rate, sizeof rate, "%.1f img/s", (done.first + done.count) / std::max(el, 1e-9));
    return std::string(rate);
  };
  dist::RunOverRanks run;
  run.n = n;
  run.batch = opt.batch;
  run.outputs = {"features"};
  run.label = "fid features";
  run.progress = opt.progress;
  run.shards = opt.shards;
  if (opt.shards) run.on_stop = "the features finished so far stay in " + opt.shards->dir() + "; continue with --resume";
  run.progress_every = opt.batch * std::max<int64_t>(1, (n / opt.batch) / 20);  // about 20 lines in a log file
  dist::run_over_ranks(w, run, body, sink);
  FeatureResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.stats = moments.finish();
  r.stats.resolution = {images.size(2), images.size(3)};
  if (opt.keep_features)
    r.features = kept.empty() ? torch::empty({0, FidInceptionImpl::kFeatures}) : torch::cat(kept, 0);
  return r;
}

void check_fid_stats(const FidStats& s, const std::string& what) {
  auto bad = [&](const std::string& m) { return InputError(what + ": " + m); };
  auto floating = [](const torch::Tensor& t) {
    return t.scalar_type() == torch::kFloat64 || t.scalar_type() == torch::kFloat32;
  };
  if (!floating(s.mu)) throw bad("mu has dtype " + std::string(c10::toString(s.mu.scalar_type())) + ", expected float64");
  if (!floating(s.sigma))
    throw bad("sigma has dtype " + std::string(c10::toString(s.sigma.scalar_type())) + ", expected float64");
  if (s.mu.dim() != 1 || s.mu.size(0) < 1) throw bad("mu has shape " + c10::str(s.mu.sizes()) + ", expected [D]");
  const int64_t d = s.mu.size(0);
  if (s.sigma.dim() != 2 || s.sigma.size(0) != d || s.sigma.size(1) != d)
    throw bad("sigma has shape " + c10::str(s.sigma.sizes()) + ", expected [" + std::to_string(d) + ", " +
              std::to_string(d) + "] to match mu");
  if (!torch::isfinite(s.mu).all().item<bool>()) throw bad("mu has non-finite values");
  if (!torch::isfinite(s.sigma).all().item<bool>()) throw bad("sigma has non-finite values");
  auto sigma = s.sigma.to(torch::kFloat64);
  double scale = sigma.abs().max().item<double>();
  double asym = (sigma - sigma.t()).abs().max().item<double>();
  if (asym > 1e-6 * scale) throw bad("sigma is not symmetric (max |sigma - sigma^T| = " + std::to_string(asym) + ")");
}

void write_fid_stats(const std::string& path, const FidStats& s) {
  check_fid_stats(s, path);
  std::vector<std::pair<std::string, torch::Tensor>> arrays = {{"mu", s.mu.to(torch::kFloat64).cpu()},
                                                               {"sigma", s.sigma.to(torch::kFloat64).cpu()}};
  if (s.n >= 0) arrays.emplace_back("n", torch::tensor(s.n, torch::kInt64));
  if (!s.resolution.empty()) arrays.emplace_back("resolution", torch::tensor(s.resolution, torch::kInt64));
  write_npz(path, arrays);
}

FidStats read_fid_stats(const std::string& path) {
  auto keys = npz_keys(path);
  std::set<std::string> have(keys.begin(), keys.end());
  for (const char* k : {"mu", "sigma"})
    if (!have.count(k))
      throw file_error(path, std::string("no '") + k + "' array: not FID statistics (expected keys mu and sigma)");
  std::vector<std::string> wanted = {"mu", "sigma"};
  for (const char* k : {"n", "resolution"})
    if (have.count(k)) wanted.emplace_back(k);
  auto arrays = read_npz(path, wanted);
  FidStats s;
  s.mu = arrays.at("mu");
  s.sigma = arrays.at("sigma");
  check_fid_stats(s, path);
  s.mu = s.mu.to(torch::kFloat64);
  s.sigma = s.sigma.to(torch::kFloat64);
  if (have.count("n")) {
    const auto& n = arrays.at("n");
    if (n.numel() != 1 || (n.scalar_type() != torch::kInt64 && n.scalar_type() != torch::kInt32) ||
        n.item<int64_t>() < 2)
      throw file_error(path, "'n' must be one integer >= 2 (the number of images), got " +
                                 std::string(c10::toString(n.scalar_type())) + " " + c10::str(n.sizes()));
    s.n = n.item<int64_t>();
  }
  if (have.count("resolution")) {
    const auto& r = arrays.at("resolution");
    if (r.dim() != 1 || r.numel() != 2 || (r.scalar_type() != torch::kInt64 && r.scalar_type() != torch::kInt32) ||
        r.min().item<int64_t>() < 1)
      throw file_error(path, "'resolution' must be two integers >= 1 (the images' height and width), got " +
                                 std::string(c10::toString(r.scalar_type())) + " " + c10::str(r.sizes()));
    s.resolution = {r[0].item<int64_t>(), r[1].item<int64_t>()};
  }
  return s;
}

}  // namespace fm
