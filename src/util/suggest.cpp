#include "util/suggest.h"

#include <algorithm>

namespace fm {

size_t edit_distance(const std::string& a, const std::string& b) {
  // Rows i - 2, i - 1 and i of the dynamic programme over prefixes.
  std::vector<size_t> before(b.size() + 1), prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) cur[j] = std::min(cur[j], before[j - 2] + 1);
    }
    std::swap(before, prev);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::optional<std::string> closest(const std::string& typed, const std::vector<std::string>& known) {
  std::optional<std::string> best;
  size_t best_d = SIZE_MAX;
  for (const auto& k : known) {
    const size_t d = edit_distance(typed, k);
    if (d < best_d) best_d = d, best = k;
  }
  return best;
}

std::optional<std::string> typo_of(const std::string& typed, const std::vector<std::string>& known) {
  auto best = closest(typed, known);
  if (!best) return std::nullopt;
  const size_t d = edit_distance(typed, *best);
  return d <= std::max<size_t>(1, typed.size() / 3) ? best : std::nullopt;
}

}  // namespace fm
