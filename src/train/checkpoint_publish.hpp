#pragma once
// Atomic publishing of a checkpoint whose files are written (docs/CHECKPOINT_FORMAT.md, "Where
// checkpoints live"): renames (shards first, the main file last), `latest`, fsyncs, keep-last
// pruning and the removal of leftovers. Internal to the checkpoint code; rank 0 only, no MPI.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace gppf::train::ckpt {

// fsync of a file or directory; some file systems refuse it on directories, which is fine there.
void fsync_path(const std::filesystem::path& p, bool directory);
// Publishes step `step` of RUN_DIR/checkpoints (`dir`) from the temporary files of all `world` ranks.
// `info` holds each rank's shard_crc32 and size (2 entries per rank), which a sharded main file gets
// as its index. On failure the temporary files are removed and nothing is published.
void publish_files(const std::string& run_dir, const std::filesystem::path& dir, std::int64_t step, int keep, int world,
                   const std::vector<std::int64_t>& info);

}  // namespace gppf::train::ckpt
