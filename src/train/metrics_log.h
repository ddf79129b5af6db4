#pragma once
// metrics.jsonl: one JSON object per logging interval. A fresh run starts the file anew (a stale file from an earlier
// run in the same directory would otherwise mix two runs); a resumed run keeps the lines up to its checkpoint's step,
// drops the ones after it (they are about to be recomputed) and carries elapsed_s and skipped_steps_total on from the
// last kept line.
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace fm {

class MetricsLog {
 public:
  // resume_step: the checkpoint's step when resuming, nullopt for a fresh run.
  MetricsLog(const std::string& path, std::optional<int64_t> resume_step);
  void write(const nlohmann::json& line);
  // elapsed_s of the last kept line (0 for a fresh run): the wall time the earlier parts of this run spent.
  double elapsed_before() const { return elapsed_before_; }
  // skipped_steps_total of the last kept line (0 for a fresh run).
  int64_t skipped_before() const { return skipped_before_; }

 private:
  std::string path_;
  std::ofstream out_;
  double elapsed_before_ = 0.0;
  int64_t skipped_before_ = 0;
};

}  // namespace fm
