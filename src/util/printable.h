#pragma once
// Text from files fm did not write (a tensor name, a JSON parser's quote of the bytes it stopped at) can reach the
// terminal inside an error message. printable() makes such text safe to print on one line.
#include <string>
#include <string_view>

namespace fm {

// `s` with every well-formed UTF-8 character kept as it is, except control characters: each byte of an ill-formed
// sequence (a stray continuation byte, an overlong form, a surrogate, a code point past U+10FFFF, a cut sequence) and
// each byte of a C0 or C1 control character or DEL, tab excepted, becomes the four characters \xNN (lower-case hex).
// Newlines are control characters: the result is always one line.
std::string printable(std::string_view s);

}  // namespace fm
