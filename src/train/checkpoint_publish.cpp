#include "src/train/checkpoint_publish.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <map>
#include <utility>

#include "core/error.hpp"
#include "io/h5.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/checkpoint_files.hpp"
#include "src/train/checkpoint_format.hpp"

namespace gppf::train {

namespace fs = std::filesystem;

namespace ckpt {
namespace {

namespace h5 = io::h5;

// Adds the shard index to a sharded checkpoint's main file and marks it complete.
void complete_main(const fs::path& tmp, int world, const std::vector<std::int64_t>& info) {
  h5::File f = h5::File::open_in_memory(tmp.string());  // see write_rank_file
  ShardIndex index;
  for (std::size_t r = 0; r < static_cast<std::size_t>(world); ++r) {
    index.crcs.push_back(info[2 * r]);
    index.bytes.push_back(r == 0 ? 0 : info[2 * r + 1]);  // the main file's own size changes right here
  }
  complete_with_index(f, index);
  const std::vector<char> image = f.close_to_image();
  write_file_bytes(tmp, image.data(), image.size());
}

void write_latest(const fs::path& dir, const std::string& name) {
  // `latest` is replaced atomically too: a crash leaves the old pointer or the new one.
  const fs::path latest_tmp = dir / "latest.tmp";
  const std::string text = name + "\n";
  write_file_bytes(latest_tmp, text.data(), text.size());
  fs::rename(latest_tmp, dir / "latest");
  fsync_path(dir, true);
}

// Keeps the newest `keep` checkpoints; drops leftovers of interrupted saves (temporary files, shards
// without their main file or beyond its world size). One saving job per run directory, and every
// rank of it is inside publish_checkpoint now, so nothing here is being written.
void clean_up(const std::string& run_dir, const fs::path& dir, int keep) {
  const auto all = list_checkpoints(run_dir);
  for (std::size_t i = static_cast<std::size_t>(std::max(keep, 1)); i < all.size(); ++i) remove_checkpoint(all[i]);
  std::map<std::int64_t, std::int64_t> world_of;  // step -> world size of the kept checkpoints
  for (const auto& p : list_checkpoints(run_dir)) {
    std::int64_t w = std::numeric_limits<std::int64_t>::max();  // unreadable: keep its shards, verify decides
    try {
      w = h5::File::open(p).attr_int("world_size");
    } catch (const std::exception&) {
    }
    world_of[checkpoint_step(p)] = w;
  }
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string f = e.path().filename().string();
    bool stale = false;
    if (f.size() > 4 && f.ends_with(".tmp")) {
      const std::string base = f.substr(0, f.size() - 4);
      stale = step_of(base) >= 0 || shard_of(base).first >= 0;
    } else if (const auto [s, r] = shard_of(f); s >= 0) {
      const auto it = world_of.find(s);
      stale = it == world_of.end() || r >= it->second;
    }
    if (stale) {
      std::error_code ec;
      fs::remove(e.path(), ec);
    }
  }
}

}  // namespace

void fsync_path(const fs::path& p, bool directory) {
  const int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  GPPF_CHECK(fd >= 0, p.string(), ": cannot open to fsync");
  const int rc = ::fsync(fd);
  ::close(fd);
  // Some file systems refuse fsync on directories; the rename is still atomic there.
  GPPF_CHECK(rc == 0 || directory, p.string(), ": fsync failed (disk full?)");
}

// Rank 0's part of publishing. Shards first, the main file last: its existence means complete.
void publish_files(const std::string& run_dir, const fs::path& dir, std::int64_t step, int keep, int world,
                   const std::vector<std::int64_t>& info) {
  const fs::path main = dir / checkpoint_file_name(step);
  try {
    if (world > 1) {  // a one-rank main file was complete when written: no index to add
      complete_main(tmp_of(main), world, info);
    }
    for (int r = 1; r < world; ++r) fs::rename(tmp_of(rank_file(dir, step, r)), rank_file(dir, step, r));
    if (world > 1) fsync_path(dir, true);
    fs::rename(tmp_of(main), main);
  } catch (...) {
    std::error_code ec;
    for (int r = 0; r < world; ++r) fs::remove(tmp_of(rank_file(dir, step, r)), ec);
    throw;
  }
  fsync_path(dir, true);
  write_latest(dir, main.filename().string());
  clean_up(run_dir, dir, keep);
}

}  // namespace ckpt

void remove_checkpoint(const std::string& path) {
  const fs::path p(path);
  const std::int64_t step = checkpoint_step(path);
  std::error_code ec;
  fs::remove(p, ec);
  if (step < 0 || !fs::is_directory(p.parent_path(), ec)) return;
  for (const auto& e : fs::directory_iterator(p.parent_path()))
    if (ckpt::shard_of(e.path().filename().string()).first == step) fs::remove(e.path(), ec);
}

}  // namespace gppf::train
