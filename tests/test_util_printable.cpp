// Tests of util/printable: what an error message may quote from a hostile file.
#include <gtest/gtest.h>

#include "util/printable.h"

namespace fm {
namespace {

using namespace std::string_literals;

TEST(Printable, KeepsWellFormedUtf8AndTab) {
  for (const std::string s : {""s, "plain ascii: ~!@#$%^&*()"s, "tab\there"s, "caf\xc3\xa9"s,
                              "\xe2\x82\xac 20"s,          // U+20AC, three bytes
                              "\xf0\x9f\x98\x80"s,          // U+1F600, four bytes
                              "\xc2\xa0\xed\x9f\xbf"s,      // U+00A0 (the first after C1) and U+D7FF
                              "\xee\x80\x80\xf4\x8f\xbf\xbf"s,  // U+E000 and U+10FFFF
                              "back\\slash"s})
    EXPECT_EQ(printable(s), s);
}

TEST(Printable, EscapesControlCharactersIncludingNewlines) {
  EXPECT_EQ(printable("a\nb\r\0c"s), "a\\x0ab\\x0d\\x00c");
  EXPECT_EQ(printable("\x1b[31mred\x7f"), "\\x1b[31mred\\x7f");
  EXPECT_EQ(printable("\xc2\x9b" "2J"), "\\xc2\\x9b2J");  // U+009B, the C1 control sequence introducer
  EXPECT_EQ(printable("\xc2\x80"), "\\xc2\\x80");
}

TEST(Printable, EscapesEachByteOfIllFormedUtf8) {
  EXPECT_EQ(printable("name\xff"), "name\\xff");
  EXPECT_EQ(printable("\x80x"), "\\x80x");                    // a continuation byte alone
  EXPECT_EQ(printable("\xc3"), "\\xc3");                      // cut at the end
  EXPECT_EQ(printable("\xc3x"), "\\xc3x");                    // cut by an ASCII byte
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");             // overlong '/'
  EXPECT_EQ(printable("\xe0\x9f\xbf"), "\\xe0\\x9f\\xbf");    // overlong three-byte form
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");    // a surrogate, U+D800
  EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // U+110000
  EXPECT_EQ(printable("\xf5\xfe"), "\\xf5\\xfe");
  EXPECT_EQ(printable("\xe2\x82" "\xe2\x82\xac"), "\\xe2\\x82\xe2\x82\xac");  // a cut sequence, then a whole one
}

}  // namespace
}  // namespace fm
