#include "train/metrics_log.h"

#include "io/file_util.h"
#include "util/error.h"

namespace fm {

MetricsLog::MetricsLog(const std::string& path, std::optional<int64_t> resume_step) : path_(path) {
  std::string kept;
  if (resume_step) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.value("step", int64_t(0)) > *resume_step) continue;
        kept += line + "\n";
        elapsed_before_ = j.value("elapsed_s", elapsed_before_);
        skipped_before_ = j.value("skipped_steps_total", skipped_before_);
      } catch (const nlohmann::json::exception&) {
        // a line cut short by a kill: dropped
      }
    }
  }
  write_file_atomic(path, kept);
  out_.open(path, std::ios::app);
  if (!out_) throw file_error(path, "cannot open for appending");
}

void MetricsLog::write(const nlohmann::json& line) { out_ << line.dump() << "\n" << std::flush; }

}  // namespace fm
