#pragma once
// The seal that ends every checkpoint file: the LibTorch archive (the payload) is followed by a 32-byte trailer
//   magic "FMCKSUM\n" | layout version (u32) | hash kind (u32, 1 = XXH3-64) | payload bytes (u64) | hash (u64)
// (integers little-endian). A trailer rather than a header: the writer streams the archive and knows its length and
// hash only at the end, and the file stays a zip archive that zip tools and torch.load still open. The seal is checked
// on the bytes alone, before any of the archive is parsed, so a flipped bit never reaches LibTorch's unpickler.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "util/error.h"

namespace fm {

constexpr size_t kSealSize = 32;

// A checkpoint whose seal is missing or does not match its payload: `fm train --resume auto` skips these and falls
// back to an older checkpoint; everywhere else it is bad input like any other.
class CorruptCheckpoint : public InputError {
 public:
  using InputError::InputError;
};

// Hashes the payload as it streams past and produces its trailer.
class SealWriter {
 public:
  SealWriter();
  ~SealWriter();
  void update(const void* data, size_t size);
  std::array<char, kSealSize> trailer() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
  uint64_t size_ = 0;
};

// Checks the seal of a whole checkpoint file's bytes and returns the payload's length (the archive is
// data[0, length)). Throws CorruptCheckpoint naming `name` when the trailer is missing or names another length or hash.
size_t verify_seal(const char* data, size_t size, const std::string& name);

// XXH3-64 of a buffer, the hash the seal uses.
uint64_t seal_hash(const void* data, size_t size);

}  // namespace fm
