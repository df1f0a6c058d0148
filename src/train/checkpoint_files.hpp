#pragma once
// Names of a run's checkpoint files (docs/CHECKPOINT_FORMAT.md, "Where checkpoints live"); internal
// to the checkpoint code. The public part (checkpoint_file_name, ...) is declared in checkpoint.hpp.
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>

namespace gppf::train::ckpt {

// "step-00001234.h5" -> 1234; -1 for anything else (shards and .tmp files are not checkpoints).
std::int64_t step_of(const std::string& file_name);
// "step-00001234.rank-00003.h5" -> {1234, 3}; {-1, -1} for anything else.
std::pair<std::int64_t, std::int64_t> shard_of(const std::string& file_name);
// Rank r's file of step `step` in `dir`: the main file for rank 0, else the shard.
std::filesystem::path rank_file(const std::filesystem::path& dir, std::int64_t step, int rank);
// The temporary name a file is written under before publishing renames it.
std::filesystem::path tmp_of(const std::filesystem::path& p);

}  // namespace gppf::train::ckpt
