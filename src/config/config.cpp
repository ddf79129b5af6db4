#include "config/config.h"

#include <algorithm>
#include <cmath>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "util/device.h"
#include "util/error.h"
#include "util/suggest.h"

namespace fm {
namespace {

using json = nlohmann::json;

// A check returns an error message for a bad value, or nothing.
template <class T>
using Check = std::function<std::optional<std::string>(const T&)>;

template <class T>
Check<T> no_check() {
  return [](const T&) -> std::optional<std::string> { return std::nullopt; };
}
template <class T>
Check<T> at_least(T lo) {
  return [lo](const T& v) -> std::optional<std::string> {
    if (v >= lo) return std::nullopt;
    std::ostringstream s;
    s << "must be >= " << lo << " (got " << v << ")";
    return s.str();
  };
}
template <class T>
Check<T> greater_than(T lo) {
  return [lo](const T& v) -> std::optional<std::string> {
    if (v > lo) return std::nullopt;
    std::ostringstream s;
    s << "must be > " << lo << " (got " << v << ")";
    return s.str();
  };
}
// Sizes that allocate: the upper bound is far beyond any real run, and keeps a typo from asking for petabytes.
Check<int64_t> between(int64_t lo, int64_t hi) {
  return [=](const int64_t& v) -> std::optional<std::string> {
    if (v >= lo && v <= hi) return std::nullopt;
    return "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "] (got " + std::to_string(v) + ")";
  };
}
Check<double> in_range(double lo, double hi, bool hi_open = false) {
  return [=](const double& v) -> std::optional<std::string> {
    if (v >= lo && (hi_open ? v < hi : v <= hi)) return std::nullopt;
    std::ostringstream s;
    s << "must be in [" << lo << ", " << hi << (hi_open ? ")" : "]") << " (got " << v << ")";
    return s.str();
  };
}
template <class T>
Check<std::vector<T>> each(Check<T> c, size_t min_len = 0, size_t max_len = SIZE_MAX) {
  return [=](const std::vector<T>& v) -> std::optional<std::string> {
    if (v.size() < min_len || v.size() > max_len) {
      std::ostringstream s;
      s << "must have " << min_len;
      if (max_len != min_len) s << (max_len == SIZE_MAX ? " or more" : " to " + std::to_string(max_len));
      s << " elements (got " << v.size() << ")";
      return s.str();
    }
    for (size_t i = 0; i < v.size(); ++i)
      if (auto e = c(v[i])) return "element " + std::to_string(i) + " " + *e;
    return std::nullopt;
  };
}

// Post-hoc EMA lengths: each in (0, sqrt(1/12)], the range of a power-function profile with gamma >= 0, none twice.
Check<std::vector<double>> distinct_sigma_rels() {
  return [](const std::vector<double>& v) -> std::optional<std::string> {
    for (size_t i = 0; i < v.size(); ++i) {
      if (!(v[i] > 0.0 && v[i] <= 0.28867513459481287)) {
        std::ostringstream s;
        s << "element " << i << " must be in (0, 0.2887] (got " << v[i] << ")";
        return s.str();
      }
      for (size_t j = 0; j < i; ++j)
        if (v[j] == v[i]) return "element " + std::to_string(i) + " repeats element " + std::to_string(j);
    }
    return std::nullopt;
  };
}

// --- the keys, listed once ---------------------------------------------------------------------------------------
template <class V>
void visit(V& v, DataConfig& c) {
  v("format", c.format);
  v("path", c.path);
  v("split", c.split);
  v("resolution", c.resolution, between(0, 8192));
  v("center_crop", c.center_crop);
  v("hflip", c.hflip);
  v("limit", c.limit, at_least<int64_t>(0));
  v("size", c.size, between(1, 100000000));
}
template <class V>
void visit(V& v, MlpConfig& c) {
  v("hidden", c.hidden, between(1, 1 << 16));
  v("depth", c.depth, between(1, 1024));
  v("time_features", c.time_features, between(2, 1 << 16));
  v("x_frequencies", c.x_frequencies, between(0, 30));
  v("second_time", c.second_time);
}
template <class V>
void visit(V& v, UNetConfig& c) {
  v("model_channels", c.model_channels, between(1, 1 << 14));
  v("num_res_blocks", c.num_res_blocks, between(1, 64));
  v("channel_mult", c.channel_mult, each(between(1, 64), 1, 16));
  v("attention_resolutions", c.attention_resolutions, each(greater_than<int64_t>(0)));
  v("num_heads", c.num_heads, greater_than<int64_t>(0));
  v("num_head_channels", c.num_head_channels, [](const int64_t& x) -> std::optional<std::string> {
    if (x == -1 || x > 0) return std::nullopt;
    return "must be -1 (use num_heads) or > 0 (got " + std::to_string(x) + ")";
  });
  v("dropout", c.dropout, in_range(0.0, 1.0, true));
  v("use_scale_shift_norm", c.use_scale_shift_norm);
  v("resblock_updown", c.resblock_updown);
  v("conv_resample", c.conv_resample);
  v("num_classes", c.num_classes, between(0, 1 << 20));
  v("class_dropout", c.class_dropout, in_range(0.0, 1.0, true));
  v("second_time", c.second_time);
}
template <class V>
void visit(V& v, ModelConfig& c) {
  v("type", c.type);
  v("target", c.target);
  v.section("mlp", c.mlp);
  v.section("unet", c.unet);
}
template <class V>
void visit(V& v, PathConfig& c) {
  v("type", c.type);
  v("sigma_min", c.sigma_min, in_range(0.0, 1.0, true));
  v("beta_min", c.beta_min, greater_than(0.0));
  v("beta_max", c.beta_max, greater_than(0.0));
  v("poly_n", c.poly_n, greater_than(0.0));
  v("coupling", c.coupling);
  v("ot_reg", c.ot_reg, greater_than(0.0));
  v("sinkhorn_iters", c.sinkhorn_iters, greater_than<int64_t>(0));
  v("sb_sigma", c.sb_sigma, greater_than(0.0));
}
template <class V>
void visit(V& v, TimeConfig& c) {
  v("sampler", c.sampler);
  v("loc", c.loc);
  v("scale", c.scale, greater_than(0.0));
  v("u_shaped_a", c.u_shaped_a, in_range(0.0, 50.0));
}
template <class V>
void visit(V& v, LossConfig& c) {
  v("type", c.type);
  v("huber_c", c.huber_c, at_least(0.0));
}
template <class V>
void visit(V& v, MeanFlowConfig& c) {
  v("t_loc", c.t_loc);
  v("t_scale", c.t_scale, greater_than(0.0));
  v("r_loc", c.r_loc);
  v("r_scale", c.r_scale, greater_than(0.0));
  v("equal_share", c.equal_share, in_range(0.0, 1.0));
  v("norm_p", c.norm_p, at_least(0.0));
  v("norm_c", c.norm_c, greater_than(0.0));
  v("omega", c.omega, greater_than(0.0));
  v("kappa", c.kappa, in_range(0.0, 1.0, true));
  v("guidance_t_min", c.guidance_t_min, in_range(0.0, 1.0));
  v("guidance_t_max", c.guidance_t_max, in_range(0.0, 1.0));
}
template <class V>
void visit(V& v, ObjectiveConfig& c) {
  v("type", c.type);
  v.section("meanflow", c.meanflow);
}
template <class V>
void visit(V& v, TrainConfig& c) {
  v("steps", c.steps, greater_than<int64_t>(0));
  v("batch_size", c.batch_size, between(1, 1 << 24));
  v("lr", c.lr, greater_than(0.0));
  v("betas", c.betas, each(in_range(0.0, 1.0, true), 2, 2));
  v("eps", c.eps, greater_than(0.0));
  v("weight_decay", c.weight_decay, at_least(0.0));
  v("warmup_steps", c.warmup_steps, at_least<int64_t>(0));
  v("decay", c.decay);
  v("decay_power", c.decay_power, greater_than(0.0));
  v("final_lr_scale", c.final_lr_scale, in_range(0.0, 1.0));
  v("grad_clip", c.grad_clip, at_least(0.0));
  v("ema_decay", c.ema_decay, in_range(0.0, 1.0));
  v("phema_sigma_rels", c.phema_sigma_rels, distinct_sigma_rels());
  v("ema_snapshot_every", c.ema_snapshot_every, at_least<int64_t>(0));
  v("ema_snapshots_keep", c.ema_snapshots_keep, at_least<int64_t>(0));
  v("log_every", c.log_every, greater_than<int64_t>(0));
  v("ckpt_every", c.ckpt_every, greater_than<int64_t>(0));
  v("keep_last", c.keep_last, greater_than<int64_t>(0));
  v("sample_every", c.sample_every, at_least<int64_t>(0));
  v("bf16", c.bf16);
  v("cuda_graph", c.cuda_graph);
  v("resume_new_data", c.resume_new_data);
  v("resume_new_objective", c.resume_new_objective);
  v.record("earlier_steps", c.earlier_steps, each(greater_than<int64_t>(0)));
  v("max_nonfinite_steps", c.max_nonfinite_steps, greater_than<int64_t>(0));
  v("tensorboard", c.tensorboard);
  v("init_from", c.init_from);
}
template <class V>
void visit(V& v, SampleConfig& c) {
  v("solver", c.solver);
  v("steps", c.steps, greater_than<int64_t>(0));
  v("atol", c.atol, greater_than(0.0));
  v("rtol", c.rtol, greater_than(0.0));
  v("time_grid", c.time_grid);
  v("n", c.n, between(1, int64_t(1) << 30));
  v("cuda_graph", c.cuda_graph);
  v("diffusion", c.diffusion);
  v("diffusion_norm", c.diffusion_norm, at_least(0.0));
  v("sde_last_step", c.sde_last_step, in_range(0.0, 1.0, true));
}
template <class V>
void visit(V& v, DistConfig& c) {
  v("timeout_s", c.timeout_s, in_range(1.0, 7 * 24 * 3600.0));
}
template <class V>
void visit(V& v, Config& c) {
  v("comment", c.comment);
  v("seed", c.seed, at_least<int64_t>(0));
  v("device", c.device, [](const std::string& d) -> std::optional<std::string> {
    if (is_device_spec(d)) return std::nullopt;
    return "must be auto, cpu, cuda or cuda:N (got \"" + d + "\")";
  });
  v.section("data", c.data);
  v.section("model", c.model);
  v.section("path", c.path);
  v.section("time", c.time);
  v.section("loss", c.loss);
  v.section("objective", c.objective);
  v.section("train", c.train);
  v.section("sample", c.sample);
  v.section("dist", c.dist);
}

// --- visitors ----------------------------------------------------------------------------------------------------
struct Writer {
  json j = json::object();
  bool records = true;  // false: the keys a user sets only
  template <class T, class C = Check<T>>
  void operator()(const char* key, T& value, C = {}) {
    if constexpr (std::is_enum_v<T>)
      j[key] = name_of(value);
    else
      j[key] = value;
  }
  template <class T, class C>
  void record(const char* key, T& value, C check) {
    if (records) (*this)(key, value, check);
  }
  template <class S>
  void section(const char* key, S& s) {
    Writer w{json::object(), records};
    visit(w, s);
    j[key] = std::move(w.j);
  }
};

const char* type_name(const bool*) { return "a boolean"; }
const char* type_name(const int64_t*) { return "an integer"; }
const char* type_name(const double*) { return "a number"; }
const char* type_name(const std::string*) { return "a string"; }
const char* type_name(const std::vector<int64_t>*) { return "a list of integers"; }
const char* type_name(const std::vector<double>*) { return "a list of numbers"; }
template <class E, class = std::enable_if_t<std::is_enum_v<E>>>
const char* type_name(const E*) {
  return "a string";
}

bool convert(const json& j, bool& out) {
  if (!j.is_boolean()) return false;
  out = j.get<bool>();
  return true;
}
bool convert(const json& j, int64_t& out) {
  if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return false;
  if (j.is_number_integer()) {
    out = j.get<int64_t>();
    return true;
  }
  // 1e5 in a JSON file is a float; accept it where it is a whole number.
  if (j.is_number_float()) {
    double d = j.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e18) {
      out = static_cast<int64_t>(d);
      return true;
    }
  }
  return false;
}
bool convert(const json& j, double& out) {
  if (!j.is_number()) return false;
  out = j.get<double>();
  return true;
}
bool convert(const json& j, std::string& out) {
  if (!j.is_string()) return false;
  out = j.get<std::string>();
  return true;
}
template <class T>
bool convert(const json& j, std::vector<T>& out) {
  if (!j.is_array()) return false;
  std::vector<T> v(j.size());
  for (size_t i = 0; i < j.size(); ++i)
    if (!convert(j[i], v[i])) return false;
  out = std::move(v);
  return true;
}

// A value as it appears in an error message: on one line, short, and without recursing into deep nesting (dump()
// recurses once per level, and a hostile file can nest tens of thousands of levels).
std::string shown(const json& v) {
  if (v.is_structured())
    for (const auto& e : v)
      if (e.is_structured()) return v.is_array() ? "a nested list" : "an object";
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

InputError unknown_key(const std::string& source, const std::string& key) {
  return InputError(source + ": unknown key '" + key + "' (did you mean '" + closest(key, config_keys()).value_or("") +
                    "'?)");
}

struct Reader {
  const json& j;
  std::string prefix;  // "train." etc.
  const std::string& source;
  std::set<std::string> seen{};

  std::string path(const char* key) const { return prefix + key; }

  template <class T, class C = Check<T>>
  void operator()(const char* key, T& value, C check = no_check<T>()) {
    seen.insert(key);
    auto it = j.find(key);
    if (it == j.end()) return;
    if constexpr (std::is_enum_v<T>) {
      if (!it->is_string())
        throw InputError(source + ": " + path(key) + ": expected " + type_name(&value) + ", got " + shown(*it));
      auto v = choice_from<T>(it->get<std::string>());
      if (!v) throw InputError(source + ": " + path(key) + ": " + not_one_of(it->get<std::string>(), choice_names<T>()));
      value = *v;
    } else {
      if (!convert(*it, value))
        throw InputError(source + ": " + path(key) + ": expected " + type_name(&value) + ", got " + shown(*it));
      if (auto err = check(value)) throw InputError(source + ": " + path(key) + ": " + *err);
    }
  }
  template <class T, class C>
  void record(const char* key, T& value, C check) {
    (*this)(key, value, check);
  }
  template <class S>
  void section(const char* key, S& s) {
    seen.insert(key);
    auto it = j.find(key);
    if (it == j.end()) return;
    if (!it->is_object()) throw InputError(source + ": " + path(key) + ": expected an object, got " + shown(*it));
    Reader r{*it, path(key) + ".", source};
    visit(r, s);
    r.finish();
  }
  void finish() const {
    for (auto it = j.begin(); it != j.end(); ++it)
      if (!seen.count(it.key())) throw unknown_key(source, prefix + it.key());
  }
};

void flatten(const json& j, const std::string& prefix, std::vector<std::string>& out) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::string k = prefix + it.key();
    if (it->is_object())
      flatten(*it, k + ".", out);
    else
      out.push_back(k);
  }
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// Parses an override's text with the type of the key's default value.
json parse_override(const std::string& key, const std::string& text, const json& like) {
  auto bad = [&](const char* what) {
    return InputError("--set " + key + ": expected " + std::string(what) + ", got '" + text + "'");
  };
  std::string t = trim(text);
  if (like.is_boolean()) {
    if (t == "true" || t == "1") return true;
    if (t == "false" || t == "0") return false;
    throw bad("true or false");
  }
  if (like.is_number_integer() || like.is_number_float()) {
    size_t used = 0;
    try {
      if (like.is_number_integer()) {
        double d = std::stod(t, &used);
        if (used == t.size() && d == std::floor(d) && std::fabs(d) < 9.0e18) return static_cast<int64_t>(d);
        throw bad("an integer");
      }
      double d = std::stod(t, &used);
      if (used == t.size()) return d;
    } catch (const std::logic_error&) {
    }
    throw bad(like.is_number_integer() ? "an integer" : "a number");
  }
  if (like.is_array()) {
    // "1,2,2,2" or "[1,2,2,2]"; an empty string is the empty list.
    std::string body = t;
    if (!body.empty() && body.front() == '[') {
      if (body.back() != ']') throw bad("a list such as 1,2,2,2");
      body = body.substr(1, body.size() - 2);
    }
    json arr = json::array();
    std::stringstream ss(body);
    std::string item;
    while (std::getline(ss, item, ',')) {
      item = trim(item);
      if (item.empty()) continue;
      size_t used = 0;
      try {
        double d = std::stod(item, &used);
        if (used != item.size()) throw bad("a list of numbers");
        bool integral = like.empty() || like[0].is_number_integer();
        if (integral) {
          if (d != std::floor(d) || !(std::fabs(d) < 9.0e18)) throw bad("a list of integers");
          arr.push_back(static_cast<int64_t>(d));
        } else {
          arr.push_back(d);
        }
      } catch (const std::logic_error&) {
        throw bad("a list of numbers");
      }
    }
    return arr;
  }
  return t;  // strings
}

}  // namespace

json to_json(const Config& c) {
  Writer w;
  visit(w, const_cast<Config&>(c));
  return w.j;
}

Config config_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw InputError(source + ": expected a JSON object at the top level");
  Config c;
  Reader r{j, "", source};
  visit(r, c);
  r.finish();
  // A data.path of the form "format:path" sets both (the spec syntax the commands take).
  auto colon = c.data.path.find(':');
  if (colon != std::string::npos) {
    const std::string fmt = c.data.path.substr(0, colon);
    if (auto format = choice_from<DataFormat>(fmt)) {
      c.data.format = *format;
      c.data.path = c.data.path.substr(colon + 1);
    } else {
      // A word before the colon is a mistyped format ("folders:DIR"), not a path that holds a colon; without this it
      // would pass as a path of the config's own format and fail later with that format's unrelated error.
      bool word = fmt.size() >= 2;
      for (char ch : fmt) word = word && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_');
      if (word)
        throw InputError(source + ": data.path: unknown format '" + fmt + "' in '" + c.data.path + "' (" +
                         choice_list<DataFormat>() + ")");
    }
  }
  return c;
}

namespace {
// The JSON form of the keys a user sets: records left out.
json settable(const Config& c) {
  Writer w{json::object(), false};
  visit(w, const_cast<Config&>(c));
  return w.j;
}
}  // namespace

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  flatten(settable(Config{}), "", keys);
  return keys;
}

void apply_overrides(json& doc, const std::vector<std::string>& overrides) {
  const json defaults = settable(Config{});
  for (const auto& ov : overrides) {
    auto eq = ov.find('=');
    if (eq == std::string::npos || eq == 0) throw InputError("--set '" + ov + "': expected KEY=VALUE");
    std::string key = trim(ov.substr(0, eq));
    // Only the config's own dotted keys: "~" (a JSON-pointer escape) and list indices are not keys.
    if (key.find_first_of("~/") != std::string::npos) throw unknown_key("--set", key);
    json::json_pointer ptr("/" + [&] {
      std::string p = key;
      std::replace(p.begin(), p.end(), '.', '/');
      return p;
    }());
    if (!defaults.contains(ptr) || defaults.at(ptr).is_object() ||
        (!ptr.parent_pointer().empty() && defaults.at(ptr.parent_pointer()).is_array()))
      throw unknown_key("--set", key);
    doc[ptr] = parse_override(key, ov.substr(eq + 1), defaults.at(ptr));
  }
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw file_error(path, "is a directory, not a config file");
  std::ifstream f(path);
  if (!f) throw file_error(path, "cannot open config file");
  json doc;
  try {
    doc = json::parse(f);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number past double's range (1e500)
    throw file_error(path, std::string("invalid JSON: ") + e.what());
  }
  if (!doc.is_object()) throw file_error(path, "expected a JSON object at the top level");
  // Check the file's own keys before overrides so that an error names the file.
  config_from_json(doc, path);
  apply_overrides(doc, overrides);
  return config_from_json(doc, overrides.empty() ? path : path + " (with --set)");
}

}  // namespace fm
