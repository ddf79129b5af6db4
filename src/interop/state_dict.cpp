#include "interop/state_dict.h"

#include <set>
#include <sstream>

#include "util/error.h"

namespace fm {
namespace {

std::string first_few(const std::vector<std::string>& v, size_t max = 5) {
  std::ostringstream s;
  for (size_t i = 0; i < v.size() && i < max; ++i) s << (i ? ", " : "") << v[i];
  if (v.size() > max) s << " and " << v.size() - max << " more";
  return s.str();
}

}  // namespace

void load_named_tensors(torch::nn::Module& m, const std::map<std::string, torch::Tensor>& state,
                        const std::vector<std::pair<std::string, std::string>>& names, const std::string& source,
                        const LayoutFn& layout) {
  auto params = m.named_parameters();
  std::vector<std::string> missing, unexpected, wrong;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  std::set<std::string> used;
  for (const auto& [fm_name, stored_name] : names) {
    auto it = state.find(stored_name);
    if (it == state.end()) {
      missing.push_back(stored_name);
      continue;
    }
    used.insert(stored_name);
    auto dst = params[fm_name];
    auto v = layout ? layout(fm_name, it->second, dst) : it->second;
    if (v.sizes() != dst.sizes() || !v.is_floating_point()) {
      std::ostringstream s;
      s << stored_name << " " << c10::toString(it->second.scalar_type()) << " " << it->second.sizes()
        << " (expected float " << dst.sizes() << ")";
      wrong.push_back(s.str());
      continue;
    }
    copies.emplace_back(dst, v);
  }
  for (const auto& kv : state)
    if (!used.count(kv.first)) unexpected.push_back(kv.first);
  if (!missing.empty() || !unexpected.empty() || !wrong.empty()) {
    std::string msg = "the tensors do not match the network built from the config:";
    if (!missing.empty()) msg += " " + std::to_string(missing.size()) + " missing (" + first_few(missing) + ");";
    if (!unexpected.empty())
      msg += " " + std::to_string(unexpected.size()) + " unexpected (" + first_few(unexpected) + ");";
    if (!wrong.empty()) msg += " " + std::to_string(wrong.size()) + " wrongly shaped (" + first_few(wrong) + ");";
    msg.pop_back();
    throw file_error(source, msg);
  }
  torch::NoGradGuard g;
  for (auto& [dst, v] : copies) dst.copy_(v);
}

std::vector<std::pair<std::string, std::string>> own_names(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& p : m.named_parameters()) out.emplace_back(p.key(), p.key());
  return out;
}

}  // namespace fm
