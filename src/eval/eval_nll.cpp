#include "eval/eval_nll.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>

#include "data/dataset.h"
#include "data/eval_data.h"
#include "data/toy2d.h"
#include "io/file_util.h"
#include "io/npy.h"
#include "likelihood/likelihood.h"
#include "nn/memory_format.h"
#include "nn/velocity_field.h"
#include "checkpoint/checkpoint.h"
#include "util/progress.h"
#include "util/device.h"
#include "util/error.h"
#include "util/preemption.h"
#include "util/rank_batches.h"

namespace fm {

namespace {

// Random draws for items [first, first + count) from CPU generators seeded by (seed, stream, chunk of 256 items), so
// that item i gets the same draw whatever the batch size; `stream` keeps probes, dequantisation draws and toy points
// independent of each other.
using Draw = std::function<torch::Tensor(const std::vector<int64_t>& shape, at::Generator& gen)>;
torch::Tensor chunked_draw(uint64_t seed, uint64_t stream, int64_t first, int64_t count,
                           const std::vector<int64_t>& item_shape, const Draw& draw) {
  constexpr int64_t kChunk = 256;
  std::vector<torch::Tensor> parts;
  for (int64_t c = first / kChunk; c * kChunk < first + count; ++c) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed * 0x9E3779B97F4A7C15ull + stream * 0xBF58476D1CE4E5B9ull +
                                                        static_cast<uint64_t>(c));
    std::vector<int64_t> shp = item_shape;
    shp.insert(shp.begin(), kChunk);
    auto chunk = draw(shp, gen);
    int64_t lo = std::max(first, c * kChunk) - c * kChunk, hi = std::min(first + count, (c + 1) * kChunk) - c * kChunk;
    parts.push_back(chunk.narrow(0, lo, hi - lo));
  }
  return torch::cat(parts);
}

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

}  // namespace

EvalNllSummary run_eval_nll(const EvalNllOptions& o, dist::World* world) {
  dist::World& w = world ? *world : this_process_only();
  const auto wall_t0 = std::chrono::steady_clock::now();
  // Cheap checks first, so a bad argument fails before a large checkpoint or data set is read.
  if (o.divergence != "hutchinson" && o.divergence != "exact")
    throw InputError("--divergence '" + o.divergence + "': expected hutchinson or exact");
  if (o.probe != "rademacher" && o.probe != "gaussian")
    throw InputError("--probe '" + o.probe + "': expected rademacher or gaussian");
  if (o.weights != "ema" && o.weights != "raw") throw InputError("--weights '" + o.weights + "': expected ema or raw");
  if (o.batch < 1) throw InputError("--batch: must be >= 1");
  if (o.limit < 0) throw InputError("--limit: must be >= 0");
  if (o.dequant_samples < 1) throw InputError("--dequant-samples: must be >= 1");
  if (!(o.atol > 0) || !(o.rtol > 0)) throw InputError("--atol, --rtol: must be > 0");
  if (!o.data.empty()) parse_data_spec(o.data);
  // Outputs are checked before the work (their directories created), so a long evaluation never fails at the end.
  if (!o.out.empty()) prepare_output_file(o.out, "--out");
  if (!o.per_image.empty()) prepare_output_file(o.per_image, "--per-image");
  install_stop_handlers();

  const auto device = resolve_device(o.device);
  configure_backend(device);
  CheckpointReader ck(o.checkpoint, device);
  const auto shape = ck.sample_shape();
  auto model = make_velocity_field(ck.config().model, ck.config().path, shape);
  model->to(device);
  ck.load_module(o.weights == "raw" ? "model" : "ema", *model);
  if (prefers_channels_last(device, shape, /*training=*/false)) weights_to_channels_last(*model);
  model->eval();
  // Issue 10, bug 7: the likelihood below is the unconditional one, through the null label; with class_dropout 0
  // that label never saw training and the number would look like a result while meaning nothing.
  if (ck.config().model.type == "unet" && ck.config().model.unet.num_classes > 0 &&
      ck.config().model.unet.class_dropout == 0)
    throw InputError(o.checkpoint + ": trained with model.unet.class_dropout 0, so its null label is untrained and "
                     "the unconditional likelihood eval-nll computes is meaningless; evaluate a model trained with "
                     "class_dropout > 0");
  // Gradients are taken with respect to x only.
  for (auto& p : model->parameters()) p.requires_grad_(false);

  // Without --data, the data the checkpoint was trained on (its test split where there is one).
  const EvalData data = resolve_eval_data(o.data, ck.config().data, shape, o.split);
  DataConfig dcfg = data.config;
  const bool toy_data = dcfg.format == "toy";
  if (!toy_data) dcfg.limit = o.limit;
  const bool has_split = dcfg.format == "cifar10" || dcfg.format == "imagenet32";
  if (toy_data && o.dequant_samples > 1)
    spdlog::warn("--dequant-samples {} does nothing for 2-D points, which are not quantised", o.dequant_samples);
  Dataset ds = load_dataset(dcfg, device);
  check_eval_data_shape(data, ds.sample_shape(), shape, o.checkpoint);
  spdlog::info("eval-nll data: {}", data.description);
  if (toy_data && ck.config().data.format == "toy" && ck.config().data.path != dcfg.path)
    spdlog::warn("{} was trained on toy:{}, evaluating on toy:{}", o.checkpoint, ck.config().data.path, dcfg.path);

  int64_t n = 0;
  torch::Tensor points;  // toys: the evaluation points, drawn on the CPU from the seed
  if (toy_data) {
    n = o.limit > 0 ? o.limit : 1000;
    // sample_toy draws from the default generator; seed it so the points depend on --seed only.
    auto gen = at::detail::getDefaultCPUGenerator();
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_current_seed(o.seed * 0x9E3779B97F4A7C15ull + 0x5EEDull);
    }
    points = sample_toy(dcfg.path, n, torch::TensorOptions().device(torch::kCPU));
  } else {
    n = ds.size();
    if (n == 0)
      throw InputError("--data " + data.spec + ": no images" + (has_split ? " in split '" + dcfg.split + "'" : ""));
    if (!ds.subset.empty()) spdlog::info("--limit {}: {}", o.limit, ds.subset);
  }
  const int64_t dims = [&] {
    int64_t d = 1;
    for (auto s : shape) d *= s;
    return d;
  }();

  // Class-conditional models are evaluated unconditionally (the null label), so the result is log p(x).
  const int64_t classes = model->num_classes();
  VelocityFn vf = [&](const torch::Tensor& t, const torch::Tensor& x) {
    torch::Tensor labels;
    if (classes > 0) labels = torch::full({x.size(0)}, classes, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    return (*model)(t.to(torch::kFloat32), x, labels);
  };
  LikelihoodOptions lo;
  lo.divergence = o.divergence;
  lo.atol = o.atol;
  lo.rtol = o.rtol;
  const bool hutch = o.divergence == "hutchinson";
  const std::string probe_kind = o.probe;
  Draw probe_draw = [&](const std::vector<int64_t>& s, at::Generator& g) { return make_probe(probe_kind, s, g); };
  Draw uniform_draw = [](const std::vector<int64_t>& s, at::Generator& g) { return torch::rand(s, g); };
  const int64_t draws = toy_data ? 1 : o.dequant_samples;

  // Over several ranks each takes its share of the batches (util/rank_batches.h) and every round's values are
  // gathered in item order, so every rank ends with the per-item values one process computes.
  const RankBatches plan(n, o.batch, w.rank(), w.size());
  auto on_wire = [&](const torch::Tensor& t) { return w.distributed() ? t.to(device) : t; };
  std::vector<torch::Tensor> per;
  double nfe_sum = 0, sum = 0;
  int64_t solves = 0;
  std::optional<Progress> progress;
  if (w.is_main()) progress.emplace("eval-nll", n, 0, 1);
  const std::string unit = toy_data ? "nats" : "bits/dim";
  for (int64_t round = 0; round < plan.rounds(); ++round) {
    const ItemRange b = plan.mine(round);
    const int64_t first = b.first, count = b.count;
    torch::Tensor value = torch::empty({0}, torch::kFloat64);
    if (!b.empty()) {
      std::vector<torch::Tensor> log_ps;
      // One probe per item, shared by its K dequantisation draws. Hutchinson's estimate of each draw's log p is
      // unbiased, but log-mean-exp is convex: independent probe noise in the K terms raises the mean (Jensen) and makes
      // the importance-weighted "bound" optimistic. With one probe the K terms carry nearly the same noise, which
      // passes through log-mean-exp unchanged and averages out over items (measured in the README).
      torch::Tensor e;
      if (hutch) e = chunked_draw(o.seed, 3, first, count, shape, probe_draw).to(device);
      for (int64_t k = 0; k < draws; ++k) {
        torch::Tensor x;
        if (toy_data) {
          x = points.narrow(0, first, count).to(device);
        } else {
          auto u = chunked_draw(o.seed, 2 + 2 * k, first, count, shape, uniform_draw).to(device);
          x = dequantize(ds.images.narrow(0, first, count), u);
        }
        auto r = log_likelihood(vf, x, lo, e);
        log_ps.push_back(r.log_p);
        nfe_sum += static_cast<double>(r.nfe);
        ++solves;
      }
      if (toy_data) {
        value = -log_ps[0];
      } else {
        // The importance-weighted bound: log of the mean of the K likelihoods of the dequantised draws.
        auto lp = draws == 1 ? log_ps[0] : logmeanexp(torch::stack(log_ps, 1), 1);
        value = bits_per_dim(lp, dims);
      }
      value = value.to(torch::kCPU, torch::kFloat64);
    }
    value = w.all_gather_cat(on_wire(value)).cpu();
    const ItemRange done = plan.round_items(round);
    sum += value.sum().item<double>();
    per.push_back(value);
    if (progress) {
      char extra[96];
      std::snprintf(extra, sizeof extra, "%s %.4f nfe %.0f", unit.c_str(),
                    sum / static_cast<double>(done.first + done.count), nfe_sum / static_cast<double>(solves));
      progress->update(done.first + done.count, extra);
    }
    // One rank's signal stops every rank after the same round.
    if (w.any(stop_requested()) && round + 1 < plan.rounds()) {
      spdlog::info("eval-nll stopped after {} of {} items; it keeps no partial results, so a rerun starts over",
                   done.first + done.count, n);
      // torchrun sends SIGTERM to every worker once one has exited: that must not turn this exit 75 into 143.
      if (w.distributed()) ignore_stop_signals();
      // A rank stopped by another rank's signal reports SIGTERM, what batch schedulers send.
      throw StopRequested{stop_signal() ? stop_signal() : SIGTERM, /*state_saved=*/false};
    }
  }
  {
    std::vector<torch::Tensor> totals{on_wire(torch::tensor({nfe_sum, double(solves)}, torch::kFloat64))};
    w.all_reduce_sum(totals);
    auto t = totals[0].cpu();
    nfe_sum = t[0].item<double>();
    solves = static_cast<int64_t>(t[1].item<double>());
  }

  EvalNllSummary s;
  s.per_item = torch::cat(per);
  s.metric = toy_data ? "nll_nats" : "bits_per_dim";
  s.n = n;
  s.mean = s.per_item.mean().item<double>();
  s.stderr_mean = n > 1 ? s.per_item.std().item<double>() / std::sqrt(static_cast<double>(n)) : 0.0;
  s.mean_nfe = nfe_sum / static_cast<double>(std::max<int64_t>(solves, 1));
  s.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_t0).count();
  if (progress) progress->finish();

  s.json = {{"metric", s.metric},
            {"mean", s.mean},
            {"stderr", s.stderr_mean},
            {"n", s.n},
            {"mean_nfe", s.mean_nfe},
            {"wall_s", s.wall_s},
            {"checkpoint", o.checkpoint},
            {"checkpoint_crc32", file_crc32(o.checkpoint)},
            {"step", ck.step()},
            {"weights", o.weights},
            {"data", data.spec},
            {"data_description", data.description},
            {"subset", toy_data         ? std::to_string(n) + " points drawn from the seed"
                       : ds.subset.empty() ? std::string("all")
                                           : ds.subset},
            {"divergence", o.divergence},
            {"probe", hutch ? o.probe : ""},
            {"dequant_samples", toy_data ? 0 : o.dequant_samples},
            {"atol", o.atol},
            {"rtol", o.rtol},
            {"seed", o.seed},
            {"device", device.str()},
            {"fm_version", FM_VERSION},
            {"libtorch_version", TORCH_VERSION}};
  if (has_split) s.json["split"] = dcfg.split;
  if (!w.is_main()) return s;  // rank 0 writes the outputs
  if (!o.out.empty()) write_file_atomic(o.out, s.json.dump(2) + "\n");
  if (!o.per_image.empty()) write_per_item(o.per_image, s.per_item);
  return s;
}

}  // namespace fm
