#pragma once
// The files of a run's checkpoints (docs/CHECKPOINT_FORMAT.md, "Where checkpoints live"): their
// names, and writing one durably. Internal to the checkpoint code; the public part
// (checkpoint_file_name, ...) is declared in checkpoint.hpp.
#include <cstddef>
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

// Writes `size` bytes to `path` (created or truncated) and fsyncs it: every byte of a checkpoint
// reaches the disk here, outside HDF5. On failure removes `path` and throws one line naming it and
// the cause ("PATH: write failed: No space left on device").
void write_file_bytes(const std::filesystem::path& path, const void* data, std::size_t size);

// Fault injection for tests: the `nth` next write_file_bytes of this process and every later one
// fail with `error` after writing half their bytes, as on a disk that filled up; nth = 0 turns it
// off. The environment variable GPPF_FAULT_ENOSPC=N does the same for ENOSPC at start-up.
void inject_write_failure(int nth, int error);

}  // namespace gppf::train::ckpt
