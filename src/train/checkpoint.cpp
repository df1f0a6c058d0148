#include "src/train/checkpoint.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <set>
#include <sstream>

#include "core/error.hpp"
#include "core/log.hpp"
#include "gppf/build_info.hpp"
#include "io/checksum.hpp"
#include "io/h5.hpp"
#include "src/dist/mpi.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;
namespace h5 = io::h5;

constexpr const char* kFormatName = "gppf-checkpoint";
constexpr const char* kGroups[] = {"params", "buffers", "optimizer"};

// Errors while reading that are not damage (the file is fine, it just does not fit) carry this
// prefix and pass through the "damaged" wrapper unchanged.
const std::string kMismatch = "does not fit";

h5::Type h5_type(DType d, const std::string& name) {
  switch (d) {
    case DType::F32: return h5::Type::F32;
    case DType::I64: return h5::Type::I64;
    case DType::I32: return h5::Type::I32;
    case DType::U8: return h5::Type::U8;
    default: GPPF_THROW("checkpoint: tensor ", name, " has dtype ", dtype_name(d), ", which checkpoints do not store");
  }
}

DType dtype_of(h5::Type t) {
  switch (t) {
    case h5::Type::F32: return DType::F32;
    case h5::Type::I64: return DType::I64;
    case h5::Type::I32: return DType::I32;
    case h5::Type::U8: return DType::U8;
    default: GPPF_THROW("checkpoint: unsupported element type in the file");
  }
}

// Dataset attributes: the wrapper has them on groups only.
void set_crc(const h5::Dataset& ds, std::uint32_t crc) {
  auto l = h5::lock();
  const std::int64_t v = crc;
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(ds.id(), "crc32", H5T_NATIVE_INT64, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Sclose(space);
  GPPF_CHECK(a >= 0, "HDF5 create attribute failed for ", ds.where(), "@crc32: ", h5::last_error());
  const herr_t st = H5Awrite(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a);
  GPPF_CHECK(st >= 0, "HDF5 write attribute failed for ", ds.where(), "@crc32: ", h5::last_error());
}

std::uint32_t get_crc(const h5::Dataset& ds) {
  auto l = h5::lock();
  hid_t a = H5Aopen(ds.id(), "crc32", H5P_DEFAULT);
  GPPF_CHECK(a >= 0, ds.where(), " has no crc32 attribute: ", h5::last_error());
  std::int64_t v = -1;
  const herr_t st = H5Aread(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a);
  GPPF_CHECK(st >= 0, "HDF5 read attribute failed for ", ds.where(), "@crc32: ", h5::last_error());
  return static_cast<std::uint32_t>(v);
}

// Link names of a group, in HDF5's name order.
std::vector<std::string> children(const h5::Group& g) {
  auto l = h5::lock();
  H5G_info_t info;
  GPPF_CHECK(H5Gget_info(g.id(), &info) >= 0, "HDF5 group info failed for ", g.where(), ": ", h5::last_error());
  std::vector<std::string> out;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t n = H5Lget_name_by_idx(g.id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    GPPF_CHECK(n >= 0, "HDF5 link name failed for ", g.where(), ": ", h5::last_error());
    std::string name(static_cast<std::size_t>(n) + 1, '\0');
    H5Lget_name_by_idx(g.id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size(), H5P_DEFAULT);
    name.resize(static_cast<std::size_t>(n));
    out.push_back(name);
  }
  return out;
}

std::uint32_t crc_of(const void* data, std::size_t n) { return io::crc32(0, data, n); }

// The checksum of the metadata that lives in the main file's attributes (CHECKPOINT_FORMAT.md).
std::uint32_t meta_crc(const CheckpointMeta& m) {
  std::string text = str(m.format_version, "\n", m.step, "\n", m.config_yaml, "\n", m.optimizer_type, "\n");
  for (const auto& t : m.tasks) text += str(t.name, "\n", t.loader.to_json(), "\n", t.sampling_rng, "\n");
  if (m.format_version >= 2)
    text += str(m.world_size, "\n", m.layout, "\n", m.rank_rng.empty() ? std::string() : m.rank_rng[0], "\n");
  return crc_of(text.data(), text.size());
}

// A file's identity (`shard_crc32`): its step, rank, world size, rank_rng and the name and stored
// checksum of every dataset. The main file's index records it per rank, so a shard left over from
// another save of the same step is told apart from the right one.
std::uint32_t shard_digest(std::int64_t step, std::int64_t rank, std::int64_t world, const std::string& rank_rng,
                           std::vector<std::string> lines) {
  std::sort(lines.begin(), lines.end());
  std::string text = str(step, "\n", rank, "\n", world, "\n", rank_rng, "\n");
  for (const auto& l : lines) text += l + "\n";
  return crc_of(text.data(), text.size());
}

std::string digest_line(const std::string& group, const std::string& name, std::uint32_t crc) {
  return str(group, "/", name, " ", crc);
}

void write_tensor(const h5::Group& g, const std::string& group, const std::string& name, const Tensor& t,
                  std::vector<std::string>& lines) {
  const Tensor h = t.device().is_host() ? t : t.to(Device::host());
  h5::Dataset ds = g.create_dataset(name, h5_type(h.dtype(), name), h.shape());
  if (h.numel() > 0) ds.write_all(h5_type(h.dtype(), name), h.data());
  const std::uint32_t crc = crc_of(h.data(), h.nbytes());
  set_crc(ds, crc);
  lines.push_back(digest_line(group, name, crc));
}

// Reads dataset `name` of `g` into a new host tensor, checking its checksum.
Tensor read_tensor(const h5::Group& g, const std::string& name) {
  h5::Dataset ds = g.open_dataset(name);
  const h5::Type type = ds.type();
  Tensor h = Tensor::empty(ds.dims(), dtype_of(type));
  if (h.numel() > 0) ds.read_all(type, h.data());
  const std::uint32_t want = get_crc(ds);
  const std::uint32_t got = crc_of(h.data(), h.nbytes());
  GPPF_CHECK(got == want, "checksum mismatch in ", g.name(), "/", name, " (stored ", want, ", computed ", got, ")");
  return h;
}

// Free text that may outgrow an attribute (HDF5 caps those at 64 KiB in the default format): a
// scalar fixed-length string dataset, which h5py reads as bytes (`f["layout"][()].decode()`).
void write_text(const h5::Group& g, const std::string& name, const std::string& text) {
  auto l = h5::lock();
  const std::string where = g.where() + "/" + name;
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, std::max<std::size_t>(1, text.size()));
  H5Tset_strpad(type, H5T_STR_NULLPAD);
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t ds = H5Dcreate2(g.id(), name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const std::string buf = text.empty() ? std::string(1, '\0') : text;
  const herr_t st = ds >= 0 ? H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) : -1;
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(space);
  H5Tclose(type);
  GPPF_CHECK(ds >= 0 && st >= 0, "HDF5 write failed for ", where, ": ", h5::last_error());
}

std::string read_text(const h5::Group& g, const std::string& name) {
  auto l = h5::lock();
  const std::string where = g.where() + "/" + name;
  hid_t ds = H5Dopen2(g.id(), name.c_str(), H5P_DEFAULT);
  GPPF_CHECK(ds >= 0, "HDF5 open failed for ", where, ": ", h5::last_error());
  hid_t type = H5Dget_type(ds);
  std::string out;
  herr_t st = -1;
  if (H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) == 0) {
    out.resize(H5Tget_size(type));
    st = H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data());
    while (!out.empty() && out.back() == '\0') out.pop_back();
  }
  H5Tclose(type);
  H5Dclose(ds);
  GPPF_CHECK(st >= 0, "HDF5 read failed for ", where, " (a fixed-length string expected): ", h5::last_error());
  return out;
}

std::int64_t step_of(const std::string& file_name) {
  static const std::regex re(R"(step-(\d+)\.h5)");
  std::smatch m;
  if (!std::regex_match(file_name, m, re)) return -1;
  return std::stoll(m[1].str());
}

// "step-00001234.rank-00003.h5" -> {1234, 3}; {-1, -1} for anything else.
std::pair<std::int64_t, std::int64_t> shard_of(const std::string& file_name) {
  static const std::regex re(R"(step-(\d+)\.rank-(\d+)\.h5)");
  std::smatch m;
  if (!std::regex_match(file_name, m, re)) return {-1, -1};
  return {std::stoll(m[1].str()), std::stoll(m[2].str())};
}

void check_format(const h5::File& f) {
  GPPF_CHECK(f.has_attr("format") && f.attr_string("format") == kFormatName,
             "not a gppf checkpoint (no format = ", kFormatName, " attribute)");
  const std::int64_t v = f.attr_int("format_version");
  GPPF_CHECK(v >= 1 && v <= kCheckpointFormatVersion, "format version ", v, " (this gppf reads versions 1 to ",
             kCheckpointFormatVersion, ")");
}

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

h5::File open_main(const std::string& path, CheckpointMeta& meta) {
  h5::File f = h5::File::open(path);
  check_format(f);
  meta.format_version = f.attr_int("format_version");
  if (f.has_attr("rank") && f.attr_int("rank") != 0) {
    const auto [s, r] = shard_of(fs::path(path).filename().string());
    GPPF_THROW("this is a shard (rank ", f.attr_int("rank"), ") of a checkpoint, not a checkpoint: open ",
               s >= 0 ? checkpoint_file_name(s) : std::string("its main file step-XXXXXXXX.h5"), " instead");
  }
  meta.complete = f.has_attr("complete") && f.attr_int("complete") == 1;
  GPPF_CHECK(meta.complete, "incomplete: the 'complete' attribute is missing (the writer did not finish)");
  meta.gppf_version = f.attr_string("gppf_version");
  meta.git_sha = f.attr_string("git_sha");
  meta.step = f.attr_int("step");
  meta.config_yaml = f.attr_string("config");
  meta.optimizer_type = f.attr_string("optimizer");
  meta.world_size = f.has_attr("world_size") ? static_cast<int>(f.attr_int("world_size")) : 1;
  GPPF_CHECK(meta.world_size >= 1, "world_size ", meta.world_size, " is not a number of ranks");
  GPPF_CHECK(meta.format_version >= 2 || meta.world_size == 1, "format version 1 with world_size ", meta.world_size);
  if (meta.format_version >= 2) {
    meta.layout = read_text(f, "layout");
    meta.rank_rng = {read_text(f, "rank_rng")};
  }
  h5::Group tasks = f.open_group("tasks");
  std::vector<std::pair<std::int64_t, TaskProgress>> order;
  for (const auto& name : children(tasks)) {
    h5::Group g = tasks.open_group(name);
    TaskProgress t;
    t.name = name;
    t.type = g.attr_string("type");
    t.dataset = g.attr_string("dataset");
    t.loader = io::LoaderState::from_json(g.attr_string("loader"));
    t.sampling_rng = g.attr_string("sampling_rng");
    order.emplace_back(g.attr_int("index"), std::move(t));
  }
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [i, t] : order) meta.tasks.push_back(std::move(t));
  const auto want = static_cast<std::uint32_t>(f.attr_int("meta_crc32"));
  GPPF_CHECK(meta_crc(meta) == want, "checksum mismatch in the metadata attributes");
  return f;
}

// The main file's metadata and the list of the checkpoint's files (from its /shards index).
CheckpointSet open_set(const std::string& path) {
  CheckpointSet s;
  s.files.push_back({0, path, 0, -1});
  h5::File f = open_main(path, s.meta);
  const int world = s.meta.world_size;
  if (world == 1) return s;
  h5::Group idx = f.open_group("shards");
  std::vector<std::int64_t> crcs, bytes;
  for (auto [name, out] : {std::pair{"crc32", &crcs}, std::pair{"bytes", &bytes}}) {
    *out = idx.read<std::int64_t>(name);
    GPPF_CHECK(static_cast<int>(out->size()) == world, "/shards/", name, " has ", out->size(),
               " entries for world_size ", world);
    GPPF_CHECK(get_crc(idx.open_dataset(name)) == crc_of(out->data(), out->size() * sizeof(std::int64_t)),
               "checksum mismatch in /shards/", name);
  }
  const fs::path dir = fs::path(path).parent_path();
  for (int r = 1; r < world; ++r)
    s.files.push_back({r, (dir / checkpoint_shard_name(s.meta.step, r)).string(),
                       static_cast<std::uint32_t>(crcs[static_cast<std::size_t>(r)]),
                       bytes[static_cast<std::size_t>(r)]});
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

void fsync_path(const fs::path& p, bool directory) {
  const int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  GPPF_CHECK(fd >= 0, p.string(), ": cannot open to fsync");
  const int rc = ::fsync(fd);
  ::close(fd);
  // Some file systems refuse fsync on directories; the rename is still atomic there.
  GPPF_CHECK(rc == 0 || directory, p.string(), ": fsync failed (disk full?)");
}

// Writes one rank's file. The main file (rank 0) is complete only when `complete_main` (one rank:
// nothing to add); publishing completes it otherwise, after adding the shard index.
void write_file(const std::string& path, std::int64_t step, int rank, int world, const CheckpointMeta& meta,
                const CheckpointTensors& tensors, bool complete_main) {
  GPPF_CHECK(world >= 1 && rank >= 0 && rank < world, "checkpoint: rank ", rank, " of world size ", world);
  const std::string rng = static_cast<std::size_t>(rank) < meta.rank_rng.size() ? meta.rank_rng[rank] : "";
  h5::File f = h5::File::create(path);
  f.set_attr("format", std::string(kFormatName));
  f.set_attr("format_version", kCheckpointFormatVersion);
  f.set_attr("gppf_version", std::string(build::kVersion));
  f.set_attr("git_sha", std::string(build::kGitSha));
  f.set_attr("step", step);
  f.set_attr("world_size", static_cast<std::int64_t>(world));
  f.set_attr("rank", static_cast<std::int64_t>(rank));
  write_text(f, "rank_rng", rng);
  if (rank == 0) {
    CheckpointMeta m = meta;
    m.format_version = kCheckpointFormatVersion;
    m.step = step;
    m.world_size = world;
    m.rank_rng = {rng};
    f.set_attr("config", meta.config_yaml);
    f.set_attr("optimizer", meta.optimizer_type);
    write_text(f, "layout", meta.layout);
    f.set_attr("meta_crc32", static_cast<std::int64_t>(meta_crc(m)));
  }
  std::vector<std::string> lines;
  {
    h5::Group g = f.create_group("params");
    for (auto* p : tensors.params) write_tensor(g, "params", p->name, p->value, lines);
  }
  {
    h5::Group g = f.create_group("buffers");
    for (const auto& [name, t] : tensors.buffers) write_tensor(g, "buffers", name, *t, lines);
  }
  {
    h5::Group g = f.create_group("optimizer");
    for (const auto& [name, t] : tensors.optimizer) write_tensor(g, "optimizer", name, *t, lines);
  }
  if (rank == 0) {
    h5::Group g = f.create_group("tasks");
    for (std::size_t i = 0; i < meta.tasks.size(); ++i) {
      const TaskProgress& t = meta.tasks[i];
      h5::Group tg = g.create_group(t.name);
      tg.set_attr("index", static_cast<std::int64_t>(i));
      tg.set_attr("type", t.type);
      tg.set_attr("dataset", t.dataset);
      tg.set_attr("loader", t.loader.to_json());
      tg.set_attr("sampling_rng", t.sampling_rng);
    }
  }
  f.set_attr("shard_crc32", static_cast<std::int64_t>(shard_digest(step, rank, world, rng, std::move(lines))));
  f.flush();
  // Written last: a reader that finds it knows everything before it was written.
  if (rank > 0 || complete_main) {
    f.set_attr("complete", std::int64_t{1});
    f.flush();
  }
  f.close();
}

// The digest of a file recomputed from its datasets' stored checksums (verify_checkpoint).
std::uint32_t recompute_digest(const h5::File& f) {
  std::vector<std::string> lines;
  for (const char* group : kGroups) {
    h5::Group g = f.open_group(group);
    for (const auto& n : children(g)) lines.push_back(digest_line(group, n, get_crc(g.open_dataset(n))));
  }
  return shard_digest(f.attr_int("step"), f.attr_int("rank"), f.attr_int("world_size"), read_text(f, "rank_rng"),
                      std::move(lines));
}

}  // namespace

namespace {

fs::path rank_file(const fs::path& dir, std::int64_t step, int rank) {
  return dir / (rank == 0 ? checkpoint_file_name(step) : checkpoint_shard_name(step, rank));
}

fs::path tmp_of(const fs::path& p) { return p.string() + ".tmp"; }

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

// What a rank's finished write left behind: its shard_crc32 and size. Throws when it is missing,
// unfinished or not this rank's.
std::array<std::int64_t, 2> written_file(const fs::path& tmp, std::int64_t step, int rank, int world) {
  std::error_code ec;
  GPPF_CHECK(fs::exists(tmp, ec), tmp.string(), " is missing (the write failed or did not run)");
  std::int64_t crc = 0;
  {
    h5::File f = h5::File::open(tmp.string());
    check_format(f);
    const std::int64_t s = f.attr_int("step"), r = f.attr_int("rank"), w = f.attr_int("world_size");
    GPPF_CHECK(s == step && r == rank && w == world, tmp.string(), " is rank ", r, " of ", w, " at step ", s,
               ", publishing expects rank ", rank, " of ", world, " at step ", step);
    GPPF_CHECK(f.has_attr("shard_crc32"), tmp.string(), " is unfinished (no shard_crc32 attribute)");
    crc = f.attr_int("shard_crc32");
  }
  return {crc, static_cast<std::int64_t>(fs::file_size(tmp))};
}

// Every rank's error ("" when fine), on every rank; collective. The common case (no error) costs
// one all-reduce of an int.
std::vector<std::string> all_errors(const std::string& mine, MPI_Comm comm, int world) {
  std::vector<std::string> out(static_cast<std::size_t>(world));
  if (world == 1) {
    out[0] = mine;
    return out;
  }
  int failed = mine.empty() ? 0 : 1, any = 0;
  GPPF_MPI_CHECK(MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, comm));
  if (!any) return out;
  constexpr std::size_t kLen = 512;
  std::vector<char> send(kLen, '\0'), recv(kLen * static_cast<std::size_t>(world), '\0');
  std::memcpy(send.data(), mine.data(), std::min(mine.size(), kLen - 1));
  GPPF_MPI_CHECK(MPI_Allgather(send.data(), static_cast<int>(kLen), MPI_CHAR, recv.data(), static_cast<int>(kLen),
                               MPI_CHAR, comm));
  for (std::size_t r = 0; r < out.size(); ++r) out[r] = std::string(recv.data() + r * kLen);
  return out;
}

// Adds the shard index to a sharded checkpoint's main file and marks it complete.
void complete_main(const fs::path& tmp, int world, const std::vector<std::int64_t>& info) {
  h5::File f = h5::File::open(tmp.string(), true);
  std::vector<std::int64_t> crcs(static_cast<std::size_t>(world)), bytes(crcs.size());
  for (std::size_t r = 0; r < crcs.size(); ++r) {
    crcs[r] = info[2 * r];
    bytes[r] = r == 0 ? 0 : info[2 * r + 1];  // the main file's own size changes right here
  }
  {
    h5::Group g = f.create_group("shards");
    for (const auto& [name, v] : {std::pair{"crc32", &crcs}, std::pair{"bytes", &bytes}}) {
      const h5::Dataset ds = g.write<std::int64_t>(name, {world}, *v);
      set_crc(ds, crc_of(v->data(), v->size() * sizeof(std::int64_t)));
    }
  }
  f.flush();
  f.set_attr("complete", std::int64_t{1});
  f.flush();
  f.close();
}

void write_latest(const fs::path& dir, const std::string& name) {
  // `latest` is replaced atomically too: a crash leaves the old pointer or the new one.
  const fs::path latest_tmp = dir / "latest.tmp";
  {
    std::ofstream out(latest_tmp, std::ios::trunc);
    out << name << '\n';
    out.flush();
    GPPF_CHECK(out, latest_tmp.string(), ": write failed (disk full?)");
  }
  fsync_path(latest_tmp, false);
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

// Rank 0's part of publishing. Shards first, the main file last: its existence means complete.
void publish_files(const std::string& run_dir, const fs::path& dir, std::int64_t step, int keep, int world,
                   const std::vector<std::int64_t>& info) {
  const fs::path main = dir / checkpoint_file_name(step);
  try {
    if (world > 1) {  // a one-rank main file was complete when written: no index to add
      complete_main(tmp_of(main), world, info);
      fsync_path(tmp_of(main), false);
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

std::string reason_of(const std::exception& e) {
  if (const auto* g = dynamic_cast<const Error*>(&e)) return g->reason();
  return e.what();
}

}  // namespace

void write_checkpoint(const std::string& path, const CheckpointMeta& meta, const CheckpointTensors& tensors) {
  write_file(path, meta.step, 0, 1, meta, tensors, true);
}

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

std::string checkpoint_file_name(std::int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "step-%08lld.h5", static_cast<long long>(step));
  return buf;
}

std::string checkpoint_shard_name(std::int64_t step, int rank) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "step-%08lld.rank-%05d.h5", static_cast<long long>(step), rank);
  return buf;
}

std::int64_t checkpoint_step(const std::string& path) { return step_of(fs::path(path).filename().string()); }

std::string write_checkpoint_shard(const std::string& run_dir, std::int64_t step, int rank, int world,
                                   const CheckpointMeta& meta, const CheckpointTensors& tensors) {
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  fs::create_directories(dir, ec);  // every rank at once: "exists" is fine, checked below
  GPPF_CHECK(fs::is_directory(dir), dir.string(), ": cannot create the checkpoint directory (", ec.message(), ")");
  const fs::path tmp = tmp_of(rank_file(dir, step, rank));
  try {
    write_file(tmp.string(), step, rank, world, meta, tensors, /*complete_main=*/world == 1);
    fsync_path(tmp, false);
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
  return tmp.string();
}

std::string publish_checkpoint(const std::string& run_dir, std::int64_t step, int keep, MPI_Comm comm,
                               const std::string& local_error) {
  int rank = 0, world = 1;
  if (comm != MPI_COMM_NULL) {
    GPPF_MPI_CHECK(MPI_Comm_rank(comm, &rank));
    GPPF_MPI_CHECK(MPI_Comm_size(comm, &world));
  }
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  const fs::path main = dir / checkpoint_file_name(step), mine_tmp = tmp_of(rank_file(dir, step, rank));
  std::string error = local_error;
  std::array<std::int64_t, 2> info{0, 0};
  if (error.empty()) {
    try {
      info = written_file(mine_tmp, step, rank, world);
    } catch (const std::exception& e) {
      error = reason_of(e);
    }
  }
  const auto errors = all_errors(error, comm, world);
  if (std::any_of(errors.begin(), errors.end(), [](const auto& e) { return !e.empty(); })) {
    std::error_code ec;
    fs::remove(mine_tmp, ec);
    std::string msg;
    for (std::size_t r = 0; r < errors.size(); ++r)
      if (!errors[r].empty()) msg += str(msg.empty() ? "" : "; ", world > 1 ? str("rank ", r, ": ") : "", errors[r]);
    GPPF_THROW("checkpoint ", main.string(), " was not saved: ", msg);
  }
  std::vector<std::int64_t> all(2 * static_cast<std::size_t>(world));
  if (world > 1)
    GPPF_MPI_CHECK(MPI_Gather(info.data(), 2, MPI_INT64_T, all.data(), 2, MPI_INT64_T, 0, comm));
  else
    std::copy(info.begin(), info.end(), all.begin());
  std::string failure;
  if (rank == 0) {
    try {
      publish_files(run_dir, dir, step, keep, world, all);
    } catch (const std::exception& e) {
      failure = reason_of(e);
      if (failure.empty()) failure = "unknown error";
    }
  }
  if (world > 1) {
    int n = static_cast<int>(failure.size());
    GPPF_MPI_CHECK(MPI_Bcast(&n, 1, MPI_INT, 0, comm));
    failure.resize(static_cast<std::size_t>(n));
    if (n > 0) GPPF_MPI_CHECK(MPI_Bcast(failure.data(), n, MPI_CHAR, 0, comm));
  }
  GPPF_CHECK(failure.empty(), "checkpoint ", main.string(), " was not published: ", failure);
  return main.string();
}

std::string save_checkpoint(const std::string& run_dir, int keep, const CheckpointMeta& meta,
                            const CheckpointTensors& tensors, MPI_Comm comm) {
  int rank = 0, world = 1;
  if (comm != MPI_COMM_NULL) {
    GPPF_MPI_CHECK(MPI_Comm_rank(comm, &rank));
    GPPF_MPI_CHECK(MPI_Comm_size(comm, &world));
  }
  std::string error;
  try {
    (void)write_checkpoint_shard(run_dir, meta.step, rank, world, meta, tensors);
  } catch (const std::exception& e) {
    error = reason_of(e);
  }
  return publish_checkpoint(run_dir, meta.step, keep, comm, error);
}

void remove_checkpoint(const std::string& path) {
  const fs::path p(path);
  const std::int64_t step = checkpoint_step(path);
  std::error_code ec;
  fs::remove(p, ec);
  if (step < 0 || !fs::is_directory(p.parent_path(), ec)) return;
  for (const auto& e : fs::directory_iterator(p.parent_path()))
    if (shard_of(e.path().filename().string()).first == step) fs::remove(e.path(), ec);
}

std::vector<std::string> list_checkpoints(const std::string& run_dir) {
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  std::vector<std::pair<std::int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::int64_t s = step_of(e.path().filename().string());
    if (s >= 0 && e.is_regular_file()) found.emplace_back(s, e.path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& [s, p] : found) out.push_back(std::move(p));
  return out;
}

std::string find_resume_checkpoint(const std::string& run_dir) {
  for (const auto& path : list_checkpoints(run_dir)) {
    try {
      (void)verify_checkpoint(path);
      return path;
    } catch (const Error& e) {
      log::warn("--resume auto: skipping ", e.reason());
    }
  }
  return "";
}

std::string resolve_checkpoint(const std::string& file_or_run_dir) {
  const fs::path p(file_or_run_dir);
  if (!fs::is_directory(p)) {
    GPPF_CHECK(fs::exists(p), "checkpoint ", file_or_run_dir, " does not exist");
    return file_or_run_dir;
  }
  const fs::path latest = p / "checkpoints" / "latest";
  std::ifstream in(latest);
  GPPF_CHECK(in, file_or_run_dir,
             " is a directory without checkpoints/latest (not a run directory, or no "
             "checkpoint written yet)");
  std::string name;
  std::getline(in, name);
  GPPF_CHECK(!name.empty(), latest.string(), " is empty");
  return (p / "checkpoints" / name).string();
}

}  // namespace gppf::train
