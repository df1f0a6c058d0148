// Reading a checkpoint: its main file, the shards its index names, and every tensor from whichever
// file holds it (docs/CHECKPOINT_FORMAT.md, "Resuming").
#include <algorithm>
#include <array>
#include <filesystem>
#include <map>
#include <set>

#include "core/error.hpp"
#include "io/h5.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/checkpoint_format.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;
namespace h5 = io::h5;
using namespace ckpt;

// One file of a checkpoint: the main file (rank 0) or a shard, with what the main file's index says.
struct FileRef {
  std::int64_t rank = 0;
  std::string path;
  std::uint32_t crc = 0;    // shard_crc32 from the index (shards only)
  std::int64_t bytes = -1;  // size from the index (shards only)
};

struct CheckpointSet {
  CheckpointMeta meta;
  std::vector<FileRef> files;  // [0] the main file, then rank 1..W-1
};

// The main file's metadata and the list of the checkpoint's files (from its /shards index).
CheckpointSet open_set(const std::string& path) {
  CheckpointSet s;
  s.files.push_back({0, path, 0, -1});
  h5::File f = open_main(path, s.meta);
  const int world = s.meta.world_size;
  if (world == 1) return s;
  const ShardIndex index = read_shard_index(f, world);
  const fs::path dir = fs::path(path).parent_path();
  for (int r = 1; r < world; ++r)
    s.files.push_back({r, (dir / checkpoint_shard_name(s.meta.step, r)).string(),
                       static_cast<std::uint32_t>(index.crcs[static_cast<std::size_t>(r)]),
                       index.bytes[static_cast<std::size_t>(r)]});
  return s;
}

// Opens one file of a set; for a shard, checks that it is there, whole and the one the index names.
// Errors name the shard's file.
h5::File open_file(const CheckpointSet& s, std::size_t i) {
  const FileRef& ref = s.files[i];
  if (i == 0) return h5::File::open(ref.path);
  try {
    std::error_code ec;
    GPPF_CHECK(fs::exists(ref.path, ec), "is missing");
    const auto size = static_cast<std::int64_t>(fs::file_size(ref.path, ec));
    GPPF_CHECK(!ec && size == ref.bytes, "has ", size, " bytes, the index says ", ref.bytes, " (truncated?)");
    h5::File f = h5::File::open(ref.path);
    check_format(f);
    GPPF_CHECK(f.has_attr("complete") && f.attr_int("complete") == 1, "is incomplete (the writer did not finish)");
    const std::int64_t step = f.attr_int("step"), rank = f.attr_int("rank"), world = f.attr_int("world_size");
    GPPF_CHECK(step == s.meta.step && rank == ref.rank && world == s.meta.world_size, "is rank ", rank, " of ", world,
               " at step ", step, ", expected rank ", ref.rank, " of ", s.meta.world_size, " at step ", s.meta.step);
    const auto crc = static_cast<std::uint32_t>(f.attr_int("shard_crc32"));
    GPPF_CHECK(crc == ref.crc, "belongs to another save of this step (shard_crc32 ", crc, ", the index says ", ref.crc,
               ")");
    return f;
  } catch (const Error& e) {
    GPPF_THROW("shard ", ref.path, " ", e.reason());
  }
}

// Runs `body`, turning any error but a mismatch into "checkpoint PATH is damaged: reason".
template <class F>
auto guarded(const std::string& path, F&& body) {
  try {
    return body();
  } catch (const Error& e) {
    if (e.reason().find(kMismatch) != std::string::npos) throw;
    GPPF_THROW("checkpoint ", path, " is damaged: ", e.reason());
  } catch (const std::exception& e) {
    GPPF_THROW("checkpoint ", path, " is damaged: ", e.what());
  }
}

// Prefixes errors inside a shard with its file name (the main file's errors need none).
template <class F>
auto in_file(const CheckpointSet& s, std::size_t i, F&& body) {
  if (i == 0) return body();
  try {
    return body();
  } catch (const Error& e) {
    const std::string prefix = "shard " + s.files[i].path;
    if (e.reason().find(kMismatch) != std::string::npos || e.reason().rfind(prefix, 0) == 0) throw;
    GPPF_THROW(prefix, ": ", e.reason());
  }
}

// Where every tensor of a checkpoint is: group index -> name -> file index. Also collects each
// shard's rank_rng into s.meta. A name in two files is damage (names are global).
std::array<std::map<std::string, std::size_t>, 3> index_files(CheckpointSet& s) {
  std::array<std::map<std::string, std::size_t>, 3> where;
  for (std::size_t i = 0; i < s.files.size(); ++i)
    in_file(s, i, [&] {
      h5::File f = open_file(s, i);
      if (i > 0) s.meta.rank_rng.push_back(read_text(f, "rank_rng"));
      for (std::size_t gi = 0; gi < 3; ++gi)
        for (const auto& n : children(f.open_group(kGroups[gi]))) {
          const auto [it, fresh] = where[gi].emplace(n, i);
          GPPF_CHECK(fresh, "/", kGroups[gi], "/", n, " is in two files: ", s.files[it->second].path, " and ",
                     s.files[i].path);
        }
    });
  return where;
}

}  // namespace

CheckpointMeta read_checkpoint(const std::string& path, const CheckpointTensors& tensors, const ReadOptions& options) {
  return guarded(path, [&] {
    CheckpointSet s = open_set(path);
    const auto where = index_files(s);
    // Which file each wanted tensor comes from; names missing anywhere fail before any reading.
    struct Want {
      std::size_t group;
      std::string name;
      Tensor* dst;
    };
    std::vector<std::vector<Want>> per_file(s.files.size());
    auto plan = [&](std::size_t gi, const std::vector<std::pair<std::string, Tensor*>>& want) {
      const char* group = kGroups[gi];
      std::set<std::string> wanted;
      for (const auto& [name, t] : want) {
        wanted.insert(name);
        const auto it = where[gi].find(name);
        GPPF_CHECK(it != where[gi].end(), "checkpoint ", path, " ", kMismatch, " this run: /", group, "/", name,
                   " is missing",
                   s.files.size() > 1 ? str(" from all ", s.files.size(), " files (main and shards)") : std::string(),
                   " (the model or optimizer differs from the checkpoint's)");
        per_file[it->second].push_back({gi, name, t});
      }
      if (options.exact)
        for (const auto& [n, i] : where[gi])
          GPPF_CHECK(wanted.count(n), "checkpoint ", path, " ", kMismatch, " this run: /", group, "/", n,
                     " has no counterpart in the run (the model or optimizer differs)");
    };
    std::vector<std::pair<std::string, Tensor*>> params;
    for (auto* p : tensors.params) params.emplace_back(p->name, &p->value);
    plan(0, params);
    plan(1, {tensors.buffers.begin(), tensors.buffers.end()});
    if (options.optimizer) plan(2, tensors.optimizer);
    for (std::size_t i = 0; i < s.files.size(); ++i) {
      if (per_file[i].empty()) continue;
      in_file(s, i, [&] {
        h5::File f = open_file(s, i);
        for (const auto& w : per_file[i]) {
          const Tensor h = read_tensor(f.open_group(kGroups[w.group]), w.name);
          GPPF_CHECK(h.shape() == w.dst->shape() && h.dtype() == w.dst->dtype(), "checkpoint ", path, " ", kMismatch,
                     " this run: /", kGroups[w.group], "/", w.name, " is ", dtype_name(h.dtype()), shape_str(h.shape()),
                     ", the run has ", dtype_name(w.dst->dtype()), shape_str(w.dst->shape()));
          w.dst->copy_from(h);
        }
      });
    }
    return s.meta;
  });
}

CheckpointMeta read_checkpoint_meta(const std::string& path) {
  return guarded(path, [&] {
    CheckpointSet s = open_set(path);
    for (std::size_t i = 1; i < s.files.size(); ++i) s.meta.rank_rng.push_back(read_text(open_file(s, i), "rank_rng"));
    return s.meta;
  });
}

CheckpointMeta verify_checkpoint(const std::string& path) {
  return guarded(path, [&] {
    CheckpointSet s = open_set(path);
    (void)index_files(s);
    for (std::size_t i = 0; i < s.files.size(); ++i)
      in_file(s, i, [&] {
        h5::File f = open_file(s, i);
        for (const char* group : kGroups) {
          h5::Group g = f.open_group(group);
          for (const auto& n : children(g)) (void)read_tensor(g, n);
        }
        if (s.meta.format_version >= 2)
          GPPF_CHECK(recompute_digest(f) == static_cast<std::uint32_t>(f.attr_int("shard_crc32")),
                     "checksum mismatch in the dataset list (shard_crc32)");
      });
    return s.meta;
  });
}

std::vector<std::pair<std::string, Shape>> checkpoint_tensor_shapes(const std::string& path, const std::string& group) {
  return guarded(path, [&] {
    const CheckpointSet s = open_set(path);
    std::vector<std::pair<std::string, Shape>> out;
    for (std::size_t i = 0; i < s.files.size(); ++i)
      in_file(s, i, [&] {
        h5::File f = open_file(s, i);
        h5::Group g = f.open_group(group);
        for (const auto& n : children(g)) out.emplace_back(n, g.open_dataset(n).dims());
      });
    return out;
  });
}

}  // namespace gppf::train
