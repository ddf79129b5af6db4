#include "io/tensorboard_event.h"

#include "io/crc32c.h"
#include "io/tensorboard_event.pb.h"
#include "util/error.h"

namespace fm::tensorboard_event {
namespace {

std::string framed(const std::string& data) {
  // Little-endian fields, as TFRecord defines them (and as every platform LibTorch runs on stores integers).
  const uint64_t len = data.size();
  const uint32_t len_crc = masked_crc32c(&len, sizeof len);
  const uint32_t data_crc = masked_crc32c(data.data(), data.size());
  std::string rec;
  rec.reserve(data.size() + 16);
  rec.append(reinterpret_cast<const char*>(&len), 8);
  rec.append(reinterpret_cast<const char*>(&len_crc), 4);
  rec += data;
  rec.append(reinterpret_cast<const char*>(&data_crc), 4);
  return rec;
}

}  // namespace

std::string file_version(double wall_time) {
  tensorboard::Event e;
  e.set_wall_time(wall_time);
  e.set_file_version("brain.Event:2");
  return framed(e.SerializeAsString());
}

std::string scalars(const nlohmann::json& metrics, double wall_time) {
  tensorboard::Event e;
  e.set_wall_time(wall_time);
  e.set_step(metrics.value("step", int64_t{0}));
  auto* summary = e.mutable_summary();
  for (const auto& [key, value] : metrics.items()) {
    if (key == "step" || !value.is_number()) continue;
    auto* v = summary->add_value();
    v->set_tag(key);
    v->set_simple_value(value.get<float>());
  }
  return framed(e.SerializeAsString());
}

std::string image(const std::string& tag, const std::string& png, int64_t step, double wall_time,
                  const std::string& what) {
  // A PNG starts with its 8-byte signature and the IHDR chunk: width and height (big-endian) and the colour type.
  static const char kSignature[] = "\x89PNG\r\n\x1a\n";
  if (png.size() < 26 || png.compare(0, 8, kSignature, 8) != 0 || png.compare(12, 4, "IHDR") != 0)
    throw file_error(what, "not a PNG file");
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(png[at + i]);
    return static_cast<int32_t>(v);
  };
  const int colour_type = static_cast<uint8_t>(png[25]);  // 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA
  const int channels = colour_type == 0 ? 1 : colour_type == 4 ? 2 : colour_type == 6 ? 4 : 3;
  tensorboard::Event e;
  e.set_wall_time(wall_time);
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  auto* img = v->mutable_image();
  img->set_width(be32(16));
  img->set_height(be32(20));
  img->set_colorspace(channels);
  img->set_encoded_image_string(png);
  return framed(e.SerializeAsString());
}

}  // namespace fm::tensorboard_event
