#pragma once
// The readers of other tools' files (safetensors, torch.save) promise one outcome for bad bytes: fm::InputError with
// one line naming the file, which fm maps to exit 2. LibTorch's own checks inside a reader (an allocation it refuses,
// a damaged zip record, a view outside its storage) throw c10::Error instead; as_input_error() turns that into the
// reader's InputError.
#include <string>

#include <c10/util/Exception.h>

#include "util/error.h"

namespace fm {

// The first line of LibTorch's message, up to its first full stop: the rest is advice or a backtrace.
inline std::string brief(const c10::Error& e) {
  std::string m = e.what_without_backtrace();
  m = m.substr(0, m.find('\n'));
  if (auto dot = m.find(". "); dot != std::string::npos) m.resize(dot);
  return m;
}

// read(), with a c10::Error it throws rethrown as file_error(path, context + brief(error)).
template <class F>
auto as_input_error(const std::string& path, const std::string& context, F&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const c10::Error& e) {
    throw file_error(path, context + brief(e));
  }
}

}  // namespace fm
