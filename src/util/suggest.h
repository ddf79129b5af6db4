#pragma once
// "Did you mean ...?" for names a user typed: the closest of the known names by edit distance.
#include <optional>
#include <string>
#include <vector>

namespace fm {

// The optimal string alignment distance: insertions, deletions, substitutions and swaps of two neighbouring
// characters (the commonest typo) each cost 1.
size_t edit_distance(const std::string& a, const std::string& b);

// The known name closest to `typed` (the first of equals), or nothing when `known` is empty.
std::optional<std::string> closest(const std::string& typed, const std::vector<std::string>& known);

// The closest name when it is near enough to be a typo of `typed` (at most a third of its letters, and at least one,
// differ), else nothing.
std::optional<std::string> typo_of(const std::string& typed, const std::vector<std::string>& known);

}  // namespace fm
