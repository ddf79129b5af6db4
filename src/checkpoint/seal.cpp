#include "checkpoint/seal.h"

#include <xxhash.h>

#include <cstdio>
#include <cstring>

namespace fm {
namespace {

constexpr char kMagic[8] = {'F', 'M', 'C', 'K', 'S', 'U', 'M', '\n'};
constexpr uint32_t kLayoutVersion = 1;
constexpr uint32_t kHashXxh3_64 = 1;

void put_le(char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}
std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

struct SealWriter::State {
  XXH3_state_t* st = XXH3_createState();
  ~State() { XXH3_freeState(st); }
};

SealWriter::SealWriter() : s_(std::make_unique<State>()) {
  if (!s_->st) throw std::bad_alloc();
  XXH3_64bits_reset(s_->st);
}
SealWriter::~SealWriter() = default;

void SealWriter::update(const void* data, size_t size) {
  XXH3_64bits_update(s_->st, data, size);
  size_ += size;
}

std::array<char, kSealSize> SealWriter::trailer() const {
  std::array<char, kSealSize> t{};
  std::memcpy(t.data(), kMagic, 8);
  put_le(t.data() + 8, kLayoutVersion, 4);
  put_le(t.data() + 12, kHashXxh3_64, 4);
  put_le(t.data() + 16, size_, 8);
  put_le(t.data() + 24, XXH3_64bits_digest(s_->st), 8);
  return t;
}

uint64_t seal_hash(const void* data, size_t size) { return XXH3_64bits(data, size); }

size_t verify_seal(const char* data, size_t size, const std::string& name) {
  if (size < kSealSize || std::memcmp(data + size - kSealSize, kMagic, 8) != 0)
    throw CorruptCheckpoint(name + ": not a verified fm checkpoint (no checksum trailer: the file is truncated or "
                                   "damaged, or was written by an fm older than checkpoint checksums)");
  const char* t = data + size - kSealSize;
  const uint64_t version = get_le(t + 8, 4), kind = get_le(t + 12, 4), length = get_le(t + 16, 8),
                 stored = get_le(t + 24, 8);
  if (version != kLayoutVersion || kind != kHashXxh3_64)
    throw CorruptCheckpoint(name + ": checksum trailer version " + std::to_string(version) + " hash " +
                            std::to_string(kind) + ", this fm reads version " + std::to_string(kLayoutVersion) +
                            " hash " + std::to_string(kHashXxh3_64) + " (damaged, or written by a newer fm)");
  if (length != size - kSealSize)
    throw CorruptCheckpoint(name + ": checksum trailer covers " + std::to_string(length) + " bytes but the file holds " +
                            std::to_string(size - kSealSize) + " before it (truncated, appended to or damaged)");
  const uint64_t actual = seal_hash(data, length);
  if (actual != stored)
    throw CorruptCheckpoint(name + ": checksum mismatch (stored " + hex(stored) + ", computed " + hex(actual) +
                            "): the file is corrupt");
  return static_cast<size_t>(length);
}

}  // namespace fm
