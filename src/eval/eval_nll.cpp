#include "eval/eval_nll.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include <spdlog/spdlog.h>

#include "checkpoint/network.h"
#include "data/dataset.h"
#include "data/eval_data.h"
#include "data/toy2d.h"
#include "dist/rank_runner.h"
#include "io/file_util.h"
#include "io/npy.h"
#include "io/provenance.h"
#include "likelihood/likelihood.h"
#include "util/device.h"
#include "util/error.h"
#include "util/per_item_draw.h"
#include "util/preemption.h"

namespace fm {

namespace {

// The streams of util/per_item_draw.h: dequantisation draw k uses 2 + 2k, the probes 3.
constexpr uint64_t kProbeStream = 3;
uint64_t dequantisation_stream(int64_t k) { return 2 + 2 * static_cast<uint64_t>(k); }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void write_per_item(const std::string& path, const torch::Tensor& values) {
  if (ends_with(path, ".npy")) {
    write_npy(path, values.contiguous());
    return;
  }
  std::string text;
  auto acc = values.accessor<double, 1>();
  char buf[40];
  for (int64_t i = 0; i < values.size(0); ++i) {
    std::snprintf(buf, sizeof buf, "%.9g\n", acc[i]);
    text += buf;
  }
  write_file_atomic(path, text);
}

// Cheap checks first, so that a bad argument fails before a large checkpoint or data set is read; the outputs are
// checked (their directories created) before the work, so that a long evaluation never fails at its end.
void check_options(const EvalNllOptions& o) {
  if (o.batch < 1) throw InputError("--batch: must be >= 1");
  if (o.limit < 0) throw InputError("--limit: must be >= 0");
  if (o.dequant_samples < 1) throw InputError("--dequant-samples: must be >= 1");
  if (!(o.atol > 0) || !(o.rtol > 0)) throw InputError("--atol, --rtol: must be > 0");
  if (!o.data.empty()) parse_data_spec(o.data);
  if (!o.out.empty()) prepare_output_file(o.out, "--out");
  if (!o.per_image.empty()) prepare_output_file(o.per_image, "--per-image");
}

// The items evaluated: the data set's images (uint8, on the device), or for a toy, points drawn from the seed.
struct NllItems {
  EvalData data;
  Dataset images;
  torch::Tensor points;  // toys: [n, 2] on the CPU
  int64_t n = 0;
  bool toy() const { return points.defined(); }
};

NllItems load_items(const EvalNllOptions& o, const CheckpointReader& ck, const torch::Device& device) {
  NllItems it;
  // Without --data, the data the checkpoint was trained on (its test split where there is one).
  it.data = resolve_eval_data(o.data, ck.config().data, ck.sample_shape(), o.split);
  DataConfig dcfg = it.data.config;
  const bool toy = dcfg.format == DataFormat::toy;
  if (!toy) dcfg.limit = o.limit;
  if (toy && o.dequant_samples > 1)
    spdlog::warn("--dequant-samples {} does nothing for 2-D points, which are not quantised", o.dequant_samples);
  it.images = load_dataset(dcfg, device);
  check_eval_data_shape(it.data, it.images.sample_shape(), ck.sample_shape(), o.checkpoint);
  spdlog::info("eval-nll data: {}", it.data.description);
  if (toy) {
    if (ck.config().data.format == DataFormat::toy && ck.config().data.path != dcfg.path)
      spdlog::warn("{} was trained on toy:{}, evaluating on toy:{}", o.checkpoint, ck.config().data.path, dcfg.path);
    it.n = o.limit > 0 ? o.limit : 1000;
    // sample_toy draws from the default generator; seed it so the points depend on --seed only.
    auto gen = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_current_seed(o.seed * 0x9E3779B97F4A7C15ull + 0x5EEDull);
    }
    it.points = sample_toy(*it.images.toy, it.n, torch::TensorOptions().device(torch::kCPU));
  } else {
    it.n = it.images.size();
    if (it.n == 0)
      throw InputError("--data " + it.data.spec + ": no images" +
                       (has_splits(dcfg.format) ? std::string(" in split '") + name_of(dcfg.split) + "'" : ""));
    if (!it.images.subset.empty()) spdlog::info("--limit {}: {}", o.limit, it.images.subset);
  }
  return it;
}

// The per-item result of batch b: bits/dim of each image (the importance-weighted bound over K dequantisations), or
// the NLL in nats of each point; and the batch's function evaluations and solves.
dist::NamedTensors nll_of_batch(const EvalNllOptions& o, const NllItems& items, const VelocityFn& vf,
                                const std::vector<int64_t>& shape, const ItemRange& b, const torch::Device& device) {
  if (b.empty())
    return {{"value", torch::empty({0}, torch::kFloat64)}, {"nfe", torch::empty({0, 2}, torch::kFloat64)}};
  LikelihoodOptions lo;
  lo.divergence = o.divergence;
  lo.atol = o.atol;
  lo.rtol = o.rtol;
  // One probe per item, shared by its K dequantisation draws. Hutchinson's estimate of each draw's log p is unbiased,
  // but log-mean-exp is convex: independent probe noise in the K terms raises the mean (Jensen) and makes the
  // importance-weighted "bound" optimistic. With one probe the K terms carry nearly the same noise, which passes
  // through log-mean-exp unchanged and averages out over items.
  torch::Tensor e;
  if (o.divergence == Divergence::hutchinson)
    e = per_item_draw(o.seed, kProbeStream, b.first, b.count, shape,
                      [&](const std::vector<int64_t>& s, at::Generator& g) { return make_probe(o.probe, s, g); })
            .to(device);
  const int64_t draws = items.toy() ? 1 : o.dequant_samples;
  std::vector<torch::Tensor> log_ps;
  double nfe = 0;
  for (int64_t k = 0; k < draws; ++k) {
    torch::Tensor x;
    if (items.toy()) {
      x = items.points.narrow(0, b.first, b.count).to(device);
    } else {
      auto u = per_item_draw(o.seed, dequantisation_stream(k), b.first, b.count, shape,
                             [](const std::vector<int64_t>& s, at::Generator& g) { return torch::rand(s, g); });
      x = dequantize(items.images.images.narrow(0, b.first, b.count), u.to(device));
    }
    auto r = log_likelihood(vf, x, lo, e);
    log_ps.push_back(r.log_p);
    nfe += static_cast<double>(r.nfe);
  }
  torch::Tensor value;
  if (items.toy()) {
    value = -log_ps[0];
  } else {
    // The importance-weighted bound: log of the mean of the K likelihoods of the dequantised draws.
    auto lp = draws == 1 ? log_ps[0] : logmeanexp(torch::stack(log_ps, 1), 1);
    int64_t dims = 1;
    for (auto s : shape) dims *= s;
    value = bits_per_dim(lp, dims);
  }
  return {{"value", value.to(torch::kCPU, torch::kFloat64)},
          {"nfe", torch::tensor({{nfe, static_cast<double>(draws)}}, torch::kFloat64)}};
}

// The provenance and settings of the result, as written to --out.
nlohmann::json result_json(const EvalNllOptions& o, const EvalNllSummary& s, const CheckpointReader& ck,
                           const NllItems& items, const torch::Device& device) {
  nlohmann::json j = {{"metric", s.metric}, {"mean", s.mean},         {"stderr", s.stderr_mean},
                      {"n", s.n},           {"mean_nfe", s.mean_nfe}, {"wall_s", s.wall_s}};
  record_file(j, "checkpoint", o.checkpoint);
  j["checkpoint_step"] = ck.step();
  j["weights"] = name_of(o.weights);
  j["data"] = items.data.spec;
  j["data_description"] = items.data.description;
  j["subset"] = items.toy()                   ? std::to_string(s.n) + " points drawn from the seed"
                : items.images.subset.empty() ? std::string("all")
                                              : items.images.subset;
  j["divergence"] = name_of(o.divergence);
  j["probe"] = o.divergence == Divergence::hutchinson ? name_of(o.probe) : "";
  j["dequant_samples"] = items.toy() ? 0 : o.dequant_samples;
  j["atol"] = o.atol;
  j["rtol"] = o.rtol;
  j["seed"] = o.seed;
  if (has_splits(items.data.config.format)) j["split"] = name_of(items.data.config.split);
  record_software(j, device);
  return j;
}

}  // namespace

EvalNllSummary run_eval_nll(const EvalNllOptions& o, dist::World* world) {
  dist::World& w = world ? *world : dist::this_process_only();
  const auto wall_t0 = std::chrono::steady_clock::now();
  check_options(o);
  install_stop_handlers();

  const auto device = resolve_device(o.device);
  configure_backend(device);
  CheckpointReader ck(o.checkpoint, device);
  const auto shape = ck.sample_shape();
  // The likelihood below is the unconditional one, through the null label; a model trained without label dropout
  // never trained that label, and the number would look like a result while meaning nothing.
  const Conditioning cond = conditioning_of(ck.config().model);
  if (cond.num_classes > 0 && !cond.null_label_trained())
    throw InputError(o.checkpoint + ": trained with model.unet.class_dropout 0, so its null label is untrained and "
                     "the unconditional likelihood eval-nll computes is meaningless; evaluate a model trained with "
                     "class_dropout > 0");
  auto model = load_network(ck, o.weights, device);
  model->eval();
  for (auto& p : model->parameters()) p.requires_grad_(false);  // gradients are taken with respect to x only
  const NllItems items = load_items(o, ck, device);

  // Class-conditional models are evaluated unconditionally (the null label), so the result is log p(x).
  VelocityFn vf = [&](const torch::Tensor& t, const torch::Tensor& x) {
    torch::Tensor labels;
    if (cond.num_classes > 0)
      labels = torch::full({x.size(0)}, cond.num_classes, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    return (*model)(t.to(torch::kFloat32), x, labels);
  };
  // Every rank ends with the per-item values one process computes.
  std::vector<torch::Tensor> per;
  double sum = 0, nfe_sum = 0, solves = 0;
  const std::string unit = items.toy() ? "nats" : "bits/dim";
  auto sink = [&](const ItemRange& done, const std::vector<torch::Tensor>& g) {
    per.push_back(g[0]);
    sum += g[0].sum().item<double>();
    nfe_sum += g[1].select(1, 0).sum().item<double>();
    solves += g[1].select(1, 1).sum().item<double>();
    char extra[96];
    std::snprintf(extra, sizeof extra, "%s %.4f nfe %.0f", unit.c_str(),
                  sum / static_cast<double>(done.first + done.count), nfe_sum / std::max(solves, 1.0));
    return std::string(extra);
  };
  dist::RunOverRanks run;
  run.n = items.n;
  run.batch = o.batch;
  run.outputs = {"value", "nfe"};
  run.label = "eval-nll";
  run.on_stop = "it keeps no partial results, so a rerun starts over";
  dist::run_over_ranks(
      w, run, [&](const ItemRange& b) { return nll_of_batch(o, items, vf, shape, b, device); }, sink);

  EvalNllSummary s;
  s.per_item = torch::cat(per);
  s.metric = items.toy() ? "nll_nats" : "bits_per_dim";
  s.n = items.n;
  s.mean = s.per_item.mean().item<double>();
  s.stderr_mean = s.n > 1 ? s.per_item.std().item<double>() / std::sqrt(static_cast<double>(s.n)) : 0.0;
  s.mean_nfe = nfe_sum / std::max(solves, 1.0);
  s.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_t0).count();
  s.json = result_json(o, s, ck, items, device);
  if (!w.is_main()) return s;  // rank 0 writes the outputs
  if (!o.out.empty()) write_file_atomic(o.out, s.json.dump(2) + "\n");
  if (!o.per_image.empty()) write_per_item(o.per_image, s.per_item);
  return s;
}

}  // namespace fm
