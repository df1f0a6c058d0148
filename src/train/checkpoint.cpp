#include "src/train/checkpoint.hpp"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "gppf/build_info.hpp"
#include "io/checksum.hpp"
#include "io/h5.hpp"
#include "src/core/error.hpp"
#include "src/core/log.hpp"

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

// The checksum of the metadata that lives in attributes (documented in CHECKPOINT_FORMAT.md).
std::uint32_t meta_crc(const CheckpointMeta& m) {
  std::string text = str(m.format_version, "\n", m.step, "\n", m.config_yaml, "\n", m.optimizer_type, "\n");
  for (const auto& t : m.tasks) text += str(t.name, "\n", t.loader.to_json(), "\n", t.sampling_rng, "\n");
  return crc_of(text.data(), text.size());
}

void write_tensor(const h5::Group& g, const std::string& name, const Tensor& t) {
  const Tensor h = t.device().is_host() ? t : t.to(Device::host());
  h5::Dataset ds = g.create_dataset(name, h5_type(h.dtype(), name), h.shape());
  if (h.numel() > 0) ds.write_all(h5_type(h.dtype(), name), h.data());
  set_crc(ds, crc_of(h.data(), h.nbytes()));
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

h5::File open_checked(const std::string& path, CheckpointMeta& meta) {
  h5::File f = h5::File::open(path);
  GPPF_CHECK(f.has_attr("format") && f.attr_string("format") == kFormatName,
             "not a gppf checkpoint (no format = ", kFormatName, " attribute)");
  meta.format_version = f.attr_int("format_version");
  GPPF_CHECK(meta.format_version == kCheckpointFormatVersion, "format version ", meta.format_version,
             " (this gppf reads version ", kCheckpointFormatVersion, ")");
  meta.complete = f.has_attr("complete") && f.attr_int("complete") == 1;
  GPPF_CHECK(meta.complete, "incomplete: the 'complete' attribute is missing (the writer did not finish)");
  meta.gppf_version = f.attr_string("gppf_version");
  meta.git_sha = f.attr_string("git_sha");
  meta.step = f.attr_int("step");
  meta.config_yaml = f.attr_string("config");
  meta.optimizer_type = f.attr_string("optimizer");
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

void fsync_path(const fs::path& p, bool directory) {
  const int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  GPPF_CHECK(fd >= 0, p.string(), ": cannot open to fsync");
  const int rc = ::fsync(fd);
  ::close(fd);
  // Some file systems refuse fsync on directories; the rename is still atomic there.
  GPPF_CHECK(rc == 0 || directory, p.string(), ": fsync failed (disk full?)");
}

std::int64_t step_of(const std::string& file_name) {
  static const std::regex re(R"(step-(\d+)\.h5)");
  std::smatch m;
  if (!std::regex_match(file_name, m, re)) return -1;
  return std::stoll(m[1].str());
}

}  // namespace

void write_checkpoint(const std::string& path, const CheckpointMeta& meta, const CheckpointTensors& tensors) {
  h5::File f = h5::File::create(path);
  f.set_attr("format", std::string(kFormatName));
  f.set_attr("format_version", kCheckpointFormatVersion);
  f.set_attr("gppf_version", std::string(build::kVersion));
  f.set_attr("git_sha", std::string(build::kGitSha));
  f.set_attr("step", meta.step);
  f.set_attr("config", meta.config_yaml);
  f.set_attr("optimizer", meta.optimizer_type);
  f.set_attr("world_size", std::int64_t{1});
  f.set_attr("rank", std::int64_t{0});
  CheckpointMeta m = meta;
  m.format_version = kCheckpointFormatVersion;
  f.set_attr("meta_crc32", static_cast<std::int64_t>(meta_crc(m)));
  {
    h5::Group g = f.create_group("params");
    for (auto* p : tensors.params) write_tensor(g, p->name, p->value);
  }
  {
    h5::Group g = f.create_group("buffers");
    for (const auto& [name, t] : tensors.buffers) write_tensor(g, name, *t);
  }
  {
    h5::Group g = f.create_group("optimizer");
    for (const auto& [name, t] : tensors.optimizer) write_tensor(g, name, *t);
  }
  {
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
  f.flush();
  // Written last: a reader that finds it knows everything before it was written.
  f.set_attr("complete", std::int64_t{1});
  f.flush();
  f.close();
}

CheckpointMeta read_checkpoint(const std::string& path, const CheckpointTensors& tensors, const ReadOptions& options) {
  return guarded(path, [&] {
    CheckpointMeta meta;
    h5::File f = open_checked(path, meta);
    auto load_group = [&](const char* group, const std::vector<std::pair<std::string, Tensor*>>& want) {
      h5::Group g = f.open_group(group);
      const auto names = children(g);
      const std::set<std::string> have(names.begin(), names.end());
      std::set<std::string> wanted;
      for (const auto& [name, t] : want) {
        wanted.insert(name);
        GPPF_CHECK(have.count(name), "checkpoint ", path, " ", kMismatch, " this run: /", group, "/", name,
                   " is missing (the model or optimizer differs from the checkpoint's)");
        Tensor h = read_tensor(g, name);
        GPPF_CHECK(h.shape() == t->shape() && h.dtype() == t->dtype(), "checkpoint ", path, " ", kMismatch,
                   " this run: /", group, "/", name, " is ", dtype_name(h.dtype()), shape_str(h.shape()),
                   ", the run has ", dtype_name(t->dtype()), shape_str(t->shape()));
        t->copy_from(h);
      }
      if (options.exact)
        for (const auto& n : names)
          GPPF_CHECK(wanted.count(n), "checkpoint ", path, " ", kMismatch, " this run: /", group, "/", n,
                     " has no counterpart in the run (the model or optimizer differs)");
    };
    std::vector<std::pair<std::string, Tensor*>> params;
    for (auto* p : tensors.params) params.emplace_back(p->name, &p->value);
    load_group("params", params);
    load_group("buffers", {tensors.buffers.begin(), tensors.buffers.end()});
    if (options.optimizer) load_group("optimizer", tensors.optimizer);
    return meta;
  });
}

CheckpointMeta read_checkpoint_meta(const std::string& path) {
  return guarded(path, [&] {
    CheckpointMeta meta;
    (void)open_checked(path, meta);
    return meta;
  });
}

CheckpointMeta verify_checkpoint(const std::string& path) {
  return guarded(path, [&] {
    CheckpointMeta meta;
    h5::File f = open_checked(path, meta);
    for (const char* group : kGroups) {
      h5::Group g = f.open_group(group);
      for (const auto& n : children(g)) (void)read_tensor(g, n);
    }
    return meta;
  });
}

std::vector<std::pair<std::string, Shape>> checkpoint_tensor_shapes(const std::string& path, const std::string& group) {
  return guarded(path, [&] {
    h5::File f = h5::File::open(path);
    h5::Group g = f.open_group(group);
    std::vector<std::pair<std::string, Shape>> out;
    for (const auto& n : children(g)) out.emplace_back(n, g.open_dataset(n).dims());
    return out;
  });
}

std::string checkpoint_file_name(std::int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "step-%08lld.h5", static_cast<long long>(step));
  return buf;
}

std::int64_t checkpoint_step(const std::string& path) { return step_of(fs::path(path).filename().string()); }

std::string save_checkpoint(const std::string& run_dir, int keep, const CheckpointMeta& meta,
                            const CheckpointTensors& tensors) {
  const fs::path dir = fs::path(run_dir) / "checkpoints";
  fs::create_directories(dir);
  const std::string name = checkpoint_file_name(meta.step);
  const fs::path final_path = dir / name;
  const fs::path tmp = final_path.string() + ".tmp";
  try {
    write_checkpoint(tmp.string(), meta, tensors);
    fsync_path(tmp, false);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  fs::rename(tmp, final_path);
  fsync_path(dir, true);
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

  // Keep the newest `keep`; drop leftovers of interrupted writes (one writer per run directory).
  const auto all = list_checkpoints(run_dir);
  for (std::size_t i = static_cast<std::size_t>(std::max(keep, 1)); i < all.size(); ++i) {
    std::error_code ec;
    fs::remove(all[i], ec);
  }
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string f = e.path().filename().string();
    if (f.size() > 4 && f.ends_with(".tmp") && step_of(f.substr(0, f.size() - 4)) >= 0) {
      std::error_code ec;
      fs::remove(e.path(), ec);
    }
  }
  return final_path.string();
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
