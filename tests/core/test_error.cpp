// The message helpers every error goes through: did-you-mean hints and escaping of file contents.
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "core/suggest.hpp"

namespace gppf {
namespace {

TEST(Error, EditDistanceCountsTranspositionsOnce) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("train", "train"), 0u);
  EXPECT_EQ(edit_distance("trian", "train"), 1u);  // one transposition, not two substitutions
  EXPECT_EQ(edit_distance("tran", "train"), 1u);
  EXPECT_EQ(edit_distance("abc", ""), 3u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
}

TEST(Error, DidYouMeanPicksTheClosestWithinAThird) {
  const std::vector<std::string> subs = {"train", "eval", "finetune", "convert", "inspect", "bench", "report"};
  EXPECT_EQ(did_you_mean("trian", subs), "; did you mean 'train'?");
  EXPECT_EQ(did_you_mean("evl", subs), "; did you mean 'eval'?");
  EXPECT_EQ(did_you_mean("inspekt", subs), "; did you mean 'inspect'?");
  EXPECT_EQ(did_you_mean("zzzzz", subs), "");                            // nothing close: no guess
  EXPECT_EQ(did_you_mean("xy", {"ab"}), "");                             // two edits in a two-letter word is too far
  EXPECT_EQ(did_you_mean("lr", {"lr_", "l"}), "; did you mean 'lr_'?");  // ties: the first
  EXPECT_EQ(did_you_mean("a", {}), "");
}

TEST(Error, PrintableEscapesControlCharacters) {
  EXPECT_EQ(printable("plain text, UTF-8: \xc3\xa9"), "plain text, UTF-8: \xc3\xa9");
  EXPECT_EQ(printable("a\nb\tc\r"), "a\\nb\\tc\\r");
  EXPECT_EQ(printable("\x1b[31mred"), "\\x1b[31mred");
  EXPECT_EQ(printable("\xc2\x9b"
                      "2J"),
            "\\u009b2J");  // CSI as a UTF-8 C1 control
  EXPECT_EQ(printable(std::string("nul\0x", 5)), "nul\\x00x");
}

}  // namespace
}  // namespace gppf
