#include "data/batch_sampler.h"

#include "data/toy2d.h"
#include "util/error.h"

namespace fm {

torch::Tensor images_to_unit_range(const torch::Tensor& u8) { return u8.to(torch::kFloat32) / 127.5 - 1.0; }

BatchSampler::BatchSampler(const Dataset& data, bool hflip) : data_(data), hflip_(hflip) {
  // With nothing to permute, next() would start a fresh epoch forever without filling a batch.
  if (!data.is_toy() && ((!data.images.defined() && !data.is_pairs()) || data.size() == 0))
    throw InputError((data.name.empty() ? "data" : data.name) + ": the data set holds no images");
}

Batch BatchSampler::next(int64_t batch_size) {
  if (data_.is_toy()) return {sample_toy(*data_.toy, batch_size, torch::TensorOptions().device(data_.device)), {}, {}};
  const auto dev = data_.device;
  const int64_t n = data_.size();
  // Batches may span an epoch boundary: take what is left, then continue in a fresh permutation.
  std::vector<torch::Tensor> parts;
  int64_t need = batch_size;
  while (need > 0) {
    if (!perm_.defined() || cursor_ >= n) {
      perm_ = torch::randperm(n, torch::TensorOptions().dtype(torch::kLong).device(dev));
      cursor_ = 0;
      ++epoch_;
    }
    int64_t take = std::min(need, n - cursor_);
    parts.push_back(perm_.narrow(0, cursor_, take));
    cursor_ += take;
    need -= take;
  }
  auto idx = parts.size() == 1 ? parts[0] : torch::cat(parts);
  if (data_.is_pairs()) {
    Batch b{data_.pair_x1.index_select(0, idx), {}, data_.pair_x0.index_select(0, idx)};
    if (data_.labels.defined()) b.labels = data_.labels.index_select(0, idx);
    return b;
  }
  auto x = images_to_unit_range(data_.images.index_select(0, idx));
  if (hflip_) {
    auto flip = torch::rand({batch_size}, torch::TensorOptions().device(dev)) < 0.5;
    x = torch::where(flip.view({-1, 1, 1, 1}), x.flip({3}), x);
  }
  Batch b{x, {}, {}};
  if (data_.labels.defined()) b.labels = data_.labels.index_select(0, idx);
  return b;
}

void BatchSampler::save(torch::serialize::OutputArchive& ar) const {
  ar.write("cursor", torch::tensor(cursor_));
  ar.write("epoch", torch::tensor(epoch_));
  ar.write("perm", perm_.defined() ? perm_.cpu() : torch::empty({0}, torch::kLong));
}

void BatchSampler::load(torch::serialize::InputArchive& ar) {
  torch::Tensor cursor, epoch, perm;
  ar.read("cursor", cursor);
  ar.read("epoch", epoch);
  ar.read("perm", perm);
  // The saved order indexes the data it was made for: a set of another size would index past its end or skip images.
  const int64_t n = data_.size();
  if (perm.numel() != 0 && (perm.dim() != 1 || perm.numel() != n || cursor.item<int64_t>() < 0 ||
                            cursor.item<int64_t>() > n))
    throw InputError("sampler: the saved order covers " + std::to_string(perm.numel()) + " images, the data has " +
                     std::to_string(n));
  cursor_ = cursor.item<int64_t>();
  epoch_ = epoch.item<int64_t>();
  perm_ = perm.numel() ? perm.to(data_.device) : torch::Tensor();
}

}  // namespace fm
