#pragma once
// TensorBoard event files: a run's metrics as scalars and its sample grids as images, in the run directory, so that
// `tensorboard --logdir RUN_DIR` shows training as it goes. One file per writer (a resumed run adds a new file),
// named events.out.tfevents.<unix time>.<host>.<pid>; TFRecord framing (length, masked CRC-32C of the length, data,
// masked CRC-32C of the data) around Event protocol buffers. Every record is flushed as it is written, so a run
// that is killed leaves a file readable up to its last whole record.
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace fm {

class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& run_dir);
  const std::string& path() const { return path_; }

  // Every number in `metrics` but "step" as a scalar of that name at metrics["step"].
  void scalars(const nlohmann::json& metrics);
  // The PNG file `png_path` as image `tag` at `step`.
  void image(const std::string& tag, const std::string& png_path, int64_t step);

 private:
  void write_record(const std::string& data);
  std::string path_;
  std::ofstream out_;
};

}  // namespace fm
