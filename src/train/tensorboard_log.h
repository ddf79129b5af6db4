#pragma once
// TensorBoard's view of a run: its metrics as scalars and its sample grids as images, in an event file in the run
// directory, so that `tensorboard --logdir RUN_DIR` shows training as it goes. One file per log (a resumed run adds a
// new file), named events.out.tfevents.<unix time>.<host>.<pid> (the format: io/tensorboard_event.h). Every record
// is flushed as it is written, so a run that is killed leaves a file readable up to its last whole record.
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace fm {

class TensorBoardLog {
 public:
  explicit TensorBoardLog(const std::string& run_dir);
  const std::string& path() const { return path_; }

  // Every number in `metrics` but "step" as a scalar of that name at metrics["step"].
  void scalars(const nlohmann::json& metrics);
  // The PNG file `png_path` as image `tag` at `step`.
  void image(const std::string& tag, const std::string& png_path, int64_t step);

 private:
  void append(const std::string& record);
  std::string path_;
  std::ofstream out_;
};

}  // namespace fm
