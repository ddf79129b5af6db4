#include "config/choices.h"

#include "util/suggest.h"

namespace fm {

std::string not_one_of(const std::string& got, const std::vector<std::string>& names) {
  std::string s = "must be one of";
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : " ") + names[i];
  s += " (got \"" + got + "\"";
  if (auto close = typo_of(got, names)) s += "; did you mean \"" + *close + "\"?";
  return s + ")";
}

}  // namespace fm
