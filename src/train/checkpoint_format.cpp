#include "src/train/checkpoint_format.hpp"

#include <hdf5.h>

#include <algorithm>
#include <filesystem>
#include <utility>

#include "core/error.hpp"
#include "gppf/build_info.hpp"
#include "io/checksum.hpp"
#include "src/train/checkpoint_files.hpp"

namespace gppf::train::ckpt {
namespace {

namespace fs = std::filesystem;
namespace h5 = io::h5;

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

// The last line of defence against NaN and Inf: a checkpoint holding one would poison every resume.
void check_finite(const Tensor& h, const std::string& group, const std::string& name) {
  if (h.dtype() != DType::F32) return;
  const auto* bits = static_cast<const std::uint32_t*>(h.data());
  const std::int64_t n = h.numel();
  std::uint32_t any = 0;  // a branch-free scan: it vectorises
  for (std::int64_t i = 0; i < n; ++i) any |= static_cast<std::uint32_t>((bits[i] & 0x7f800000u) == 0x7f800000u);
  if (any == 0) return;
  std::int64_t at = 0;
  while ((bits[at] & 0x7f800000u) != 0x7f800000u) ++at;
  GPPF_THROW("/", group, "/", name, " holds a non-finite value (", h.data_as<float>()[at], " at element ", at, " of ",
             n, "); refusing to checkpoint it");
}

void write_tensor(const h5::Group& g, const std::string& group, const std::string& name, const Tensor& t,
                  std::vector<std::string>& lines) {
  const Tensor h = t.device().is_host() ? t : t.to(Device::host());
  check_finite(h, group, name);
  h5::Dataset ds = g.create_dataset(name, h5_type(h.dtype(), name), h.shape());
  if (h.numel() > 0) ds.write_all(h5_type(h.dtype(), name), h.data());
  const std::uint32_t crc = crc_of(h.data(), h.nbytes());
  set_crc(ds, crc);
  lines.push_back(digest_line(group, name, crc));
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
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_obj_track_times(dcpl, 0);  // no time stamps: the same state gives the same file bytes
  hid_t ds = H5Dcreate2(g.id(), name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  const std::string buf = text.empty() ? std::string(1, '\0') : text;
  const herr_t st = ds >= 0 ? H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) : -1;
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(space);
  H5Tclose(type);
  GPPF_CHECK(ds >= 0 && st >= 0, "HDF5 write failed for ", where, ": ", h5::last_error());
}

// The main file's metadata attributes and /layout, with their checksum.
void write_main_meta(const h5::File& f, std::int64_t step, int world, const CheckpointMeta& meta,
                     const std::string& rng) {
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

void write_tasks(const h5::File& f, const std::vector<TaskProgress>& tasks) {
  h5::Group g = f.create_group("tasks");
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    const TaskProgress& t = tasks[i];
    h5::Group tg = g.create_group(t.name);
    tg.set_attr("index", static_cast<std::int64_t>(i));
    tg.set_attr("type", t.type);
    tg.set_attr("dataset", t.dataset);
    tg.set_attr("loader", t.loader.to_json());
    tg.set_attr("sampling_rng", t.sampling_rng);
  }
}

std::size_t tensor_bytes(const CheckpointTensors& t) {
  std::size_t n = 0;
  for (const auto* p : t.params) n += p->value.nbytes();
  for (const auto& [name, x] : t.buffers) n += x->nbytes();
  for (const auto& [name, x] : t.optimizer) n += x->nbytes();
  return n;
}

}  // namespace

std::uint32_t crc_of(const void* data, std::size_t n) { return io::crc32(0, data, n); }

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

void check_format(const h5::File& f) {
  GPPF_CHECK(f.has_attr("format") && f.attr_string("format") == kFormatName,
             "not a gppf checkpoint (no format = ", kFormatName, " attribute)");
  const std::int64_t v = f.attr_int("format_version");
  GPPF_CHECK(v >= 1 && v <= kCheckpointFormatVersion, "format version ", v, " (this gppf reads versions 1 to ",
             kCheckpointFormatVersion, ")");
}

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

void write_rank_file(const std::string& path, std::int64_t step, int rank, int world, const CheckpointMeta& meta,
                     const CheckpointTensors& tensors, bool complete_main) {
  GPPF_CHECK(world >= 1 && rank >= 0 && rank < world, "checkpoint: rank ", rank, " of world size ", world);
  const std::string rng = static_cast<std::size_t>(rank) < meta.rank_rng.size() ? meta.rank_rng[rank] : "";
  // Built in memory and written in one go: a full disk fails write_file_bytes with its errno, never an
  // HDF5 call half-way (after which HDF5 1.10 crashes in its exit-time cleanup).
  h5::File f = h5::File::create_in_memory(path, tensor_bytes(tensors));
  f.set_attr("format", std::string(kFormatName));
  f.set_attr("format_version", kCheckpointFormatVersion);
  f.set_attr("gppf_version", std::string(build::kVersion));
  f.set_attr("git_sha", std::string(build::kGitSha));
  f.set_attr("step", step);
  f.set_attr("world_size", static_cast<std::int64_t>(world));
  f.set_attr("rank", static_cast<std::int64_t>(rank));
  write_text(f, "rank_rng", rng);
  if (rank == 0) write_main_meta(f, step, world, meta, rng);
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
  if (rank == 0) write_tasks(f, meta.tasks);
  f.set_attr("shard_crc32", static_cast<std::int64_t>(shard_digest(step, rank, world, rng, std::move(lines))));
  // Written last: a reader that finds it knows everything before it was written.
  if (rank > 0 || complete_main) f.set_attr("complete", std::int64_t{1});
  const std::vector<char> image = f.close_to_image();
  write_file_bytes(path, image.data(), image.size());
}

ShardIndex read_shard_index(const h5::File& f, int world) {
  ShardIndex index;
  h5::Group idx = f.open_group("shards");
  for (auto [name, out] : {std::pair{"crc32", &index.crcs}, std::pair{"bytes", &index.bytes}}) {
    *out = idx.read<std::int64_t>(name);
    GPPF_CHECK(static_cast<int>(out->size()) == world, "/shards/", name, " has ", out->size(),
               " entries for world_size ", world);
    GPPF_CHECK(get_crc(idx.open_dataset(name)) == crc_of(out->data(), out->size() * sizeof(std::int64_t)),
               "checksum mismatch in /shards/", name);
  }
  return index;
}

void complete_with_index(const h5::File& f, const ShardIndex& index) {
  const auto world = static_cast<std::int64_t>(index.crcs.size());
  {
    h5::Group g = f.create_group("shards");
    for (const auto& [name, v] : {std::pair{"crc32", &index.crcs}, std::pair{"bytes", &index.bytes}}) {
      const h5::Dataset ds = g.write<std::int64_t>(name, {world}, *v);
      set_crc(ds, crc_of(v->data(), v->size() * sizeof(std::int64_t)));
    }
  }
  f.flush();
  f.set_attr("complete", std::int64_t{1});
  f.flush();
}

std::uint32_t recompute_digest(const h5::File& f) {
  std::vector<std::string> lines;
  for (const char* group : kGroups) {
    h5::Group g = f.open_group(group);
    for (const auto& n : children(g)) lines.push_back(digest_line(group, n, get_crc(g.open_dataset(n))));
  }
  return shard_digest(f.attr_int("step"), f.attr_int("rank"), f.attr_int("world_size"), read_text(f, "rank_rng"),
                      std::move(lines));
}

}  // namespace gppf::train::ckpt
