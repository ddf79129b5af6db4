#include "util/progress.h"

#include <cstdio>
#include <unistd.h>

namespace fm {

std::string format_duration(double s) {
  if (!(s >= 0) || s > 1e8) return "?";
  auto t = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60), (long long)(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(t / 60), (long long)(t % 60));
  return buf;
}

Progress::Progress(std::string label, int64_t total, int64_t start, int64_t every)
    : label_(std::move(label)), total_(total), start_(start), every_(std::max<int64_t>(1, every)),
      tty_(::isatty(2)), t0_(std::chrono::steady_clock::now()) {}

double Progress::elapsed_s() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
}

void Progress::update(int64_t done, const std::string& extra, bool force) {
  if (!force && !tty_ && done != total_ && (done - start_) % every_ != 0) return;
  if (done == last_printed_ && !force) return;
  last_printed_ = done;
  double el = elapsed_s(), rate = (done - start_) / std::max(el, 1e-9);
  double eta = rate > 0 ? (total_ - done) / rate : -1;
  int pct = total_ > 0 ? static_cast<int>(100.0 * done / total_) : 100;
  std::fprintf(stderr, "%s%s %lld/%lld (%d%%) %s elapsed %s eta %s%s", tty_ ? "\r\033[K" : "", label_.c_str(),
               (long long)done, (long long)total_, pct, extra.c_str(), format_duration(el).c_str(),
               format_duration(eta).c_str(), tty_ ? "" : "\n");
  std::fflush(stderr);
}

void Progress::finish(const std::string& extra) {
  // A line already drawn at the total keeps its figures rather than being redrawn without them.
  if (last_printed_ != total_ || !extra.empty()) update(total_, extra, true);
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace fm
