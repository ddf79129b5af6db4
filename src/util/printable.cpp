#include "util/printable.h"

#include <cstdint>

namespace fm {
namespace {

// The length of the well-formed UTF-8 sequence at the start of `s` (1 to 4), or 0 when it is ill-formed: the byte
// ranges of the Unicode Standard's table of well-formed UTF-8 byte sequences (section 3.9, table 3-7).
size_t utf8_length(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t c = b(0);
  if (c < 0x80) return 1;
  size_t n;
  uint8_t lo = 0x80, hi = 0xbf;  // the range of the second byte
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c == 0xe0) n = 3, lo = 0xa0;
  else if (c >= 0xe1 && c <= 0xef) n = 3, hi = c == 0xed ? 0x9f : 0xbf;  // 0xed a0..bf: surrogates
  else if (c == 0xf0) n = 4, lo = 0x90;
  else if (c >= 0xf1 && c <= 0xf3) n = 4;
  else if (c == 0xf4) n = 4, hi = 0x8f;  // past U+10FFFF otherwise
  else return 0;                         // a continuation byte, an overlong lead (c0, c1) or f5..ff
  if (s.size() < n || b(1) < lo || b(1) > hi) return 0;
  for (size_t i = 2; i < n; ++i)
    if (b(i) < 0x80 || b(i) > 0xbf) return 0;
  return n;
}

// C0 controls but tab, DEL, and the C1 controls U+0080..U+009F (UTF-8 c2 80..c2 9f).
bool is_control(std::string_view ch) {
  const auto c = static_cast<uint8_t>(ch[0]);
  if (ch.size() == 1) return (c < 0x20 && c != '\t') || c == 0x7f;
  return ch.size() == 2 && c == 0xc2 && static_cast<uint8_t>(ch[1]) < 0xa0;
}

void escape(std::string& out, std::string_view bytes) {
  static const char hex[] = "0123456789abcdef";
  for (char ch : bytes) {
    const auto c = static_cast<uint8_t>(ch);
    out += "\\x";
    out += hex[c >> 4];
    out += hex[c & 15];
  }
}

}  // namespace

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  while (!s.empty()) {
    const size_t n = utf8_length(s);
    const std::string_view ch = s.substr(0, n ? n : 1);
    if (n == 0 || is_control(ch))
      escape(out, ch);
    else
      out += ch;
    s.remove_prefix(ch.size());
  }
  return out;
}

}  // namespace fm
