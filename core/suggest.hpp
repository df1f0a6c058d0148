#pragma once
// "Did you mean" hints for unknown keys, task names and subcommands.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace gppf {

// Edit distance with adjacent transpositions (optimal string alignment).
std::size_t edit_distance(std::string_view a, std::string_view b);

// "; did you mean 'x'?" for the candidate closest to `word` within a third of its length (at least 1;
// the first of equals), else "".
std::string did_you_mean(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace gppf
