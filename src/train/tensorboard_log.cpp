#include "train/tensorboard_log.h"

#include <unistd.h>

#include <chrono>
#include <iterator>

#include "io/tensorboard_event.h"
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

TensorBoardLog::TensorBoardLog(const std::string& run_dir) {
  path_ = run_dir + "/events.out.tfevents." + std::to_string(static_cast<int64_t>(now())) + "." + host_name() + "." +
          std::to_string(::getpid());
  out_.open(path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw file_error(path_, "cannot create the TensorBoard event file");
  append(tensorboard_event::file_version(now()));
}

void TensorBoardLog::append(const std::string& record) {
  out_.write(record.data(), static_cast<std::streamsize>(record.size()));
  out_.flush();
  if (!out_) throw file_error(path_, "write failed");
}

void TensorBoardLog::scalars(const nlohmann::json& metrics) { append(tensorboard_event::scalars(metrics, now())); }

void TensorBoardLog::image(const std::string& tag, const std::string& png_path, int64_t step) {
  std::ifstream f(png_path, std::ios::binary);
  std::string png((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  append(tensorboard_event::image(tag, png, step, now(), png_path));
}

}  // namespace fm
