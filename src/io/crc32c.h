#pragma once
// CRC-32C (Castagnoli), the checksum of TFRecord framing. Debian 12 has no C/C++ CRC-32C library (libcrc32c is not
// packaged, abseil's crc arrived after the packaged version), and a table-driven CRC is a dozen lines.
#include <cstddef>
#include <cstdint>

namespace fm {

uint32_t crc32c(const void* data, size_t size);

// TFRecord stores CRCs masked: rotate right by 15 bits and add a constant (so that a CRC of data holding CRCs does
// not degenerate).
inline uint32_t masked_crc32c(const void* data, size_t size) {
  const uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

}  // namespace fm
