#include "interop/tensorboard_writer.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iterator>

#include "interop/crc32c.h"
#include "interop/tensorboard_event.pb.h"
#include "util/error.h"

namespace fm {
namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

}  // namespace

TensorBoardWriter::TensorBoardWriter(const std::string& run_dir) {
  path_ = run_dir + "/events.out.tfevents." + std::to_string(static_cast<int64_t>(now())) + "." + host_name() + "." +
          std::to_string(::getpid());
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw file_error(path_, "cannot create the TensorBoard event file");
  tensorboard::Event e;
  e.set_wall_time(now());
  e.set_file_version("brain.Event:2");  // the version TensorBoard's reader expects first in every file
  write_record(e.SerializeAsString());
}

void TensorBoardWriter::write_record(const std::string& data) {
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
  out_.write(rec.data(), static_cast<std::streamsize>(rec.size()));
  out_.flush();
  if (!out_) throw file_error(path_, "write failed");
}

void TensorBoardWriter::scalars(const nlohmann::json& metrics) {
  tensorboard::Event e;
  e.set_wall_time(now());
  e.set_step(metrics.value("step", int64_t{0}));
  auto* summary = e.mutable_summary();
  for (const auto& [key, value] : metrics.items()) {
    if (key == "step" || !value.is_number()) continue;
    auto* v = summary->add_value();
    v->set_tag(key);
    v->set_simple_value(value.get<float>());
  }
  write_record(e.SerializeAsString());
}

void TensorBoardWriter::image(const std::string& tag, const std::string& png_path, int64_t step) {
  std::ifstream f(png_path, std::ios::binary);
  std::string png((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // A PNG starts with its 8-byte signature and the IHDR chunk: width and height (big-endian) and the colour type.
  static const char kSignature[] = "\x89PNG\r\n\x1a\n";
  if (png.size() < 26 || png.compare(0, 8, kSignature, 8) != 0 || png.compare(12, 4, "IHDR") != 0)
    throw file_error(png_path, "not a PNG file");
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(png[at + i]);
    return static_cast<int32_t>(v);
  };
  const int colour_type = static_cast<uint8_t>(png[25]);  // 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA
  const int channels = colour_type == 0 ? 1 : colour_type == 4 ? 2 : colour_type == 6 ? 4 : 3;
  tensorboard::Event e;
  e.set_wall_time(now());
  e.set_step(step);
  auto* v = e.mutable_summary()->add_value();
  v->set_tag(tag);
  auto* img = v->mutable_image();
  img->set_width(be32(16));
  img->set_height(be32(20));
  img->set_colorspace(channels);
  img->set_encoded_image_string(png);
  write_record(e.SerializeAsString());
}

}  // namespace fm
