#pragma once
// Errors that reach the user. Each carries the exit code the CLI maps it to:
// 2 for bad usage, config or input files (the user can fix them), 1 for anything else.
#include <stdexcept>
#include <string>

namespace fm {

// Bad input: a config key, an argument, a data file, a checkpoint. The message names the file and key or field.
class InputError : public std::runtime_error {
 public:
  explicit InputError(const std::string& msg) : std::runtime_error(msg) {}
};

// Prefixes a message with the file it concerns: "path: message".
inline InputError file_error(const std::string& path, const std::string& msg) { return InputError(path + ": " + msg); }

}  // namespace fm
