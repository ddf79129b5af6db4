#pragma once
// A progress line on stderr: redrawn in place on a terminal, plain lines (at most one per `every` updates) when stderr
// is a file or pipe, as in batch jobs.
#include <chrono>
#include <string>

namespace fm {

class Progress {
 public:
  Progress(std::string label, int64_t total, int64_t start = 0, int64_t every = 1);
  // `done` items finished; `extra` is appended (loss, throughput...).
  void update(int64_t done, const std::string& extra = "", bool force = false);
  void finish(const std::string& extra = "");
  double elapsed_s() const;

 private:
  std::string label_;
  int64_t total_, start_, every_, last_printed_ = -1;
  bool tty_;
  std::chrono::steady_clock::time_point t0_;
};

std::string format_duration(double seconds);

}  // namespace fm
