#include "io/h5.hpp"

#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <vector>

#include "core/error.hpp"

namespace gppf::io::h5 {
namespace {

std::recursive_mutex& mutex() {
  static std::recursive_mutex m;
  return m;
}

herr_t walk_cb(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  if (n == 0 && err) {
    *out = str(err->func_name ? err->func_name : "?", ": ", err->desc ? err->desc : "?");
    // Errors are one line; HDF5's file errors embed ctime()'s newline.
    for (char& c : *out)
      if (c == '\n') c = ' ';
  }
  return 0;
}

hid_t native(Type t) {
  switch (t) {
    case Type::U8: return H5T_NATIVE_UINT8;
    case Type::I32: return H5T_NATIVE_INT32;
    case Type::U32: return H5T_NATIVE_UINT32;
    case Type::I64: return H5T_NATIVE_INT64;
    case Type::F32: return H5T_NATIVE_FLOAT;
    case Type::F64: return H5T_NATIVE_DOUBLE;
  }
  return H5T_NATIVE_UINT8;
}

// Checks an HDF5 return value; names the object and HDF5's reason.
template <class R>
R check(R r, const std::string& what, const std::string& where) {
  if (r < 0) GPPF_THROW("HDF5 ", what, " failed for ", where, ": ", last_error());
  return r;
}

std::string join(const std::string& a, const std::string& b) { return a == "/" ? "/" + b : a + "/" + b; }

// Files in the 1.8 format: superblock v2 and object headers v2, whose checksums HDF5 verifies before
// it parses them. A damaged file is then an error, not a crash inside HDF5 1.10's header-message
// parsers (fuzzing found several: docs/RELIABILITY.md).
void checksummed_format(hid_t fapl) { H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18); }

// Refuses (and closes) a file without checksummed metadata: gppf has written none since it wrote
// the 1.8 format; GPPF_ALLOW_UNCHECKSUMMED_HDF5=1 reads older files, at the risk above.
void require_checksummed(hid_t f, const std::string& path) {
  H5F_info2_t info{};
  const bool ok = H5Fget_info2(f, &info) >= 0 && info.super.version >= 2;
  if (ok) return;
  const char* allow = std::getenv("GPPF_ALLOW_UNCHECKSUMMED_HDF5");
  if (allow && std::string(allow) == "1") return;
  H5Fclose(f);
  GPPF_THROW("HDF5 file ", path, " has no metadata checksums (superblock version ", info.super.version,
             "; gppf writes version 2): re-convert a data set with gppf convert (scripts/fetch-data.sh does), or set "
             "GPPF_ALLOW_UNCHECKSUMMED_HDF5=1 to read an older file you trust");
}

// File creation: the root group without modification times either (see create_dataset).
hid_t file_creation() {
  hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
  H5Pset_obj_track_times(fcpl, 0);
  return fcpl;
}

// File access: read-only opens take no lock (data sets are read by many ranks at once, and Lustre or
// GPFS may not support flock); writers lock where the file system can.
hid_t file_access(bool writable) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  checksummed_format(fapl);
#if H5_VERSION_GE(1, 10, 7)
  H5Pset_file_locking(fapl, writable ? 1 : 0, 1);
#else
  (void)writable;
#endif
  return fapl;
}

}  // namespace

std::unique_lock<std::recursive_mutex> lock() {
  std::unique_lock<std::recursive_mutex> l(mutex());
  static bool quiet = [] {
    // We report errors ourselves (with the file's name); HDF5's stack dump to stderr is noise.
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)quiet;
  return l;
}

std::string last_error() {
  auto l = lock();
  std::string out;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walk_cb, &out);
  return out.empty() ? std::string("no HDF5 reason given") : out;
}

template <>
Type type_of<std::uint8_t>() {
  return Type::U8;
}
template <>
Type type_of<std::int32_t>() {
  return Type::I32;
}
template <>
Type type_of<std::uint32_t>() {
  return Type::U32;
}
template <>
Type type_of<std::int64_t>() {
  return Type::I64;
}
template <>
Type type_of<float>() {
  return Type::F32;
}
template <>
Type type_of<double>() {
  return Type::F64;
}

// ---- Handle ------------------------------------------------------------------------
Handle::Handle(hid id, std::string path, std::string name)
    : m_id(id), m_path(std::move(path)), m_name(std::move(name)) {}
Handle::~Handle() { reset(); }
Handle::Handle(Handle&& o) noexcept : m_id(o.m_id), m_path(std::move(o.m_path)), m_name(std::move(o.m_name)) {
  o.m_id = -1;
}
Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    reset();
    m_id = o.m_id;
    m_path = std::move(o.m_path);
    m_name = std::move(o.m_name);
    o.m_id = -1;
  }
  return *this;
}
std::string Handle::where() const { return m_path + ":" + m_name; }

void Handle::reset() {
  if (m_id < 0) return;
  auto l = lock();
  // Identifiers of any kind close through H5Oclose except files, which File closes itself.
  const H5I_type_t kind = H5Iget_type(m_id);
  if (kind == H5I_FILE)
    H5Fclose(m_id);
  else if (kind == H5I_GROUP || kind == H5I_DATASET)
    H5Oclose(m_id);
  m_id = -1;
}

// ---- Group -------------------------------------------------------------------------
Group Group::create_group(const std::string& name) const {
  auto l = lock();
  const std::string full = join(m_name, name);
  hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
  H5Pset_obj_track_times(gcpl, 0);  // see create_dataset
  hid_t g = H5Gcreate2(m_id, name.c_str(), H5P_DEFAULT, gcpl, H5P_DEFAULT);
  H5Pclose(gcpl);
  check(g, "create group", m_path + ":" + full);
  return Group(g, m_path, full);
}

Group Group::open_group(const std::string& name) const {
  auto l = lock();
  const std::string full = join(m_name, name);
  hid_t g = check(H5Gopen2(m_id, name.c_str(), H5P_DEFAULT), "open group", m_path + ":" + full);
  return Group(g, m_path, full);
}

bool Group::has(const std::string& name) const {
  auto l = lock();
  return check(H5Lexists(m_id, name.c_str(), H5P_DEFAULT), "look up", m_path + ":" + join(m_name, name)) > 0;
}

Dataset Group::create_dataset(const std::string& name, Type type, const std::vector<std::int64_t>& dims,
                              const CreateOptions& options) const {
  auto l = lock();
  const std::string full = join(m_name, name);
  const std::string where = m_path + ":" + full;
  std::vector<hsize_t> d(dims.begin(), dims.end());
  hid_t space = check(H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr), "create dataspace", where);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  // No modification times in object headers (HDF5 stamps every dataset by default): the same
  // contents then give the same file bytes, so data set shards and checkpoints are reproducible.
  H5Pset_obj_track_times(dcpl, 0);
  bool empty = false;
  for (auto v : dims) empty = empty || v == 0;
  if (!options.chunk.empty() && !empty) {
    std::vector<hsize_t> c(options.chunk.begin(), options.chunk.end());
    for (std::size_t i = 0; i < c.size() && i < d.size(); ++i) c[i] = std::max<hsize_t>(1, std::min(c[i], d[i]));
    check(H5Pset_chunk(dcpl, static_cast<int>(c.size()), c.data()), "set chunking", where);
    if (options.deflate > 0) {
      check(H5Pset_deflate(dcpl, static_cast<unsigned>(options.deflate)), "set deflate", where);
      // Chunk data has no checksum of its own (the format's metadata checksums stop at the headers):
      // Fletcher-32 after deflate is checked before a chunk is inflated, so a damaged chunk is a read
      // error, not HDF5 copying a whole chunk out of a shorter inflated buffer (a fuzzing finding).
      // A damaged compressed chunk is lost either way; uncompressed chunks keep per-sample CRCs only,
      // so that one flipped byte costs one sample.
      check(H5Pset_fletcher32(dcpl), "set the Fletcher-32 checksum", where);
    }
  }
  hid_t ds = H5Dcreate2(m_id, name.c_str(), native(type), space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  H5Sclose(space);
  check(ds, "create dataset", where);
  return Dataset(ds, m_path, full);
}

Dataset Group::open_dataset(const std::string& name) const {
  auto l = lock();
  const std::string full = join(m_name, name);
  hid_t ds = check(H5Dopen2(m_id, name.c_str(), H5P_DEFAULT), "open dataset", m_path + ":" + full);
  return Dataset(ds, m_path, full);
}

template <class T>
Dataset Group::write(const std::string& name, const std::vector<std::int64_t>& dims, const std::vector<T>& values,
                     const CreateOptions& options) const {
  std::int64_t n = 1;
  for (auto v : dims) n *= v;
  GPPF_CHECK(n == static_cast<std::int64_t>(values.size()), "h5 write ", m_path, ":", join(m_name, name), ": ",
             values.size(), " values for ", n, " elements");
  Dataset ds = create_dataset(name, type_of<T>(), dims, options);
  if (n > 0) ds.write_all(type_of<T>(), values.data());
  return ds;
}

template <class T>
std::vector<T> Group::read(const std::string& name) const {
  Dataset ds = open_dataset(name);
  std::int64_t n = 1;
  for (auto v : ds.dims()) n *= v;
  std::vector<T> out(static_cast<std::size_t>(n));
  if (n > 0) ds.read_all(type_of<T>(), out.data());
  return out;
}

#define GPPF_H5_INSTANTIATE(T)                                                                                  \
  template Dataset Group::write<T>(const std::string&, const std::vector<std::int64_t>&, const std::vector<T>&, \
                                   const CreateOptions&) const;                                                 \
  template std::vector<T> Group::read<T>(const std::string&) const;
GPPF_H5_INSTANTIATE(std::uint8_t)
GPPF_H5_INSTANTIATE(std::int32_t)
GPPF_H5_INSTANTIATE(std::uint32_t)
GPPF_H5_INSTANTIATE(std::int64_t)
GPPF_H5_INSTANTIATE(float)
GPPF_H5_INSTANTIATE(double)
#undef GPPF_H5_INSTANTIATE

namespace {

void write_attr(hid_t obj, const std::string& name, hid_t type, const void* value, const std::string& where) {
  if (H5Aexists(obj, name.c_str()) > 0) check(H5Adelete(obj, name.c_str()), "replace attribute", where);
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Sclose(space);
  check(a, "create attribute", where);
  const herr_t st = H5Awrite(a, type, value);
  H5Aclose(a);
  check(st, "write attribute", where);
}

hid_t open_attr(hid_t obj, const std::string& name, const std::string& where) {
  return check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "open attribute", where);
}

}  // namespace

void Group::set_attr(const std::string& name, const std::string& value) const {
  auto l = lock();
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, std::max<std::size_t>(1, value.size()));
  H5Tset_strpad(t, H5T_STR_NULLPAD);
  std::string buf = value.empty() ? std::string(1, '\0') : value;
  try {
    write_attr(m_id, name, t, buf.data(), where() + "@" + name);
  } catch (...) {
    H5Tclose(t);
    throw;
  }
  H5Tclose(t);
}

void Group::set_attr(const std::string& name, std::int64_t value) const {
  auto l = lock();
  write_attr(m_id, name, H5T_NATIVE_INT64, &value, where() + "@" + name);
}

void Group::set_attr(const std::string& name, double value) const {
  auto l = lock();
  write_attr(m_id, name, H5T_NATIVE_DOUBLE, &value, where() + "@" + name);
}

bool Group::has_attr(const std::string& name) const {
  auto l = lock();
  return check(H5Aexists(m_id, name.c_str()), "look up attribute", where() + "@" + name) > 0;
}

std::string Group::attr_string(const std::string& name) const {
  auto l = lock();
  const std::string w = where() + "@" + name;
  hid_t a = open_attr(m_id, name, w);
  hid_t t = H5Aget_type(a);
  std::string out;
  herr_t st = -1;
  if (H5Tget_class(t) == H5T_STRING) {
    if (H5Tis_variable_str(t) > 0) {  // as h5py writes them
      char* p = nullptr;
      st = H5Aread(a, t, &p);
      if (st >= 0 && p) {
        out = p;
        H5free_memory(p);
      }
    } else {
      out.resize(H5Tget_size(t));
      st = H5Aread(a, t, out.data());
      while (!out.empty() && out.back() == '\0') out.pop_back();
    }
  }
  H5Tclose(t);
  H5Aclose(a);
  check(st, "read string attribute", w);
  return out;
}

std::int64_t Group::attr_int(const std::string& name) const {
  auto l = lock();
  const std::string w = where() + "@" + name;
  hid_t a = open_attr(m_id, name, w);
  std::int64_t v = 0;
  const herr_t st = H5Aread(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a);
  check(st, "read integer attribute", w);
  return v;
}

double Group::attr_double(const std::string& name) const {
  auto l = lock();
  const std::string w = where() + "@" + name;
  hid_t a = open_attr(m_id, name, w);
  double v = 0;
  const herr_t st = H5Aread(a, H5T_NATIVE_DOUBLE, &v);
  H5Aclose(a);
  check(st, "read float attribute", w);
  return v;
}

// ---- Dataset -----------------------------------------------------------------------
std::vector<std::int64_t> Dataset::dims() const {
  auto l = lock();
  hid_t space = check(H5Dget_space(m_id), "get dataspace", where());
  const int nd = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> d(static_cast<std::size_t>(std::max(nd, 0)));
  if (nd > 0) H5Sget_simple_extent_dims(space, d.data(), nullptr);
  H5Sclose(space);
  check(nd, "get rank", where());
  return {d.begin(), d.end()};
}

namespace {

struct ElementType {
  H5T_class_t cls;
  std::size_t size;
  H5T_sign_t sign;
};

// The file's element type of dataset `ds`; throws unless it is an integer or float of at most 8 bytes.
// A damaged file can claim an element of gigabytes, for which H5Dread would allocate its conversion
// buffer (fuzz/regressions/shard/alloc-2.7GB.h5: 2.7 GB).
ElementType element_type(hid_t ds, const std::string& where) {
  hid_t t = check(H5Dget_type(ds), "get type", where);
  const ElementType e{H5Tget_class(t), H5Tget_size(t), H5Tget_sign(t)};
  H5Tclose(t);
  if ((e.cls == H5T_INTEGER || e.cls == H5T_FLOAT) && e.size >= 1 && e.size <= 8) return e;
  GPPF_THROW("HDF5 dataset ", where, " has an unsupported element type (class ", static_cast<int>(e.cls), ", ", e.size,
             " bytes)");
}

// Before any H5Dread: the element type as above, and a layout gppf writes (contiguous or chunked):
// a damaged file claiming compact or virtual storage is refused before HDF5 reads it.
void check_readable(hid_t ds, const std::string& where) {
  element_type(ds, where);
  const hid_t dcpl = check(H5Dget_create_plist(ds), "get creation properties", where);
  const H5D_layout_t layout = H5Pget_layout(dcpl);
  H5Pclose(dcpl);
  GPPF_CHECK(layout == H5D_CONTIGUOUS || layout == H5D_CHUNKED, "HDF5 dataset ", where,
             " has a storage layout this reader refuses (", static_cast<int>(layout),
             "; gppf writes contiguous or chunked datasets only)");
}

}  // namespace

Type Dataset::type() const {
  auto l = lock();
  const ElementType e = element_type(m_id, where());
  if (e.cls == H5T_FLOAT) {
    if (e.size == 4) return Type::F32;
    if (e.size == 8) return Type::F64;
  } else {
    if (e.size == 1) return Type::U8;
    if (e.size == 4) return e.sign == H5T_SGN_NONE ? Type::U32 : Type::I32;
    if (e.size == 8) return Type::I64;
  }
  GPPF_THROW("HDF5 dataset ", where(), " has an unsupported element type (class ", static_cast<int>(e.cls), ", ",
             e.size, " bytes)");
}

namespace {

void rows_io(hid_t ds, std::int64_t start, std::int64_t count, Type type, void* buf, bool read,
             const std::string& where) {
  if (read) check_readable(ds, where);
  hid_t fspace = check(H5Dget_space(ds), "get dataspace", where);
  const int nd = H5Sget_simple_extent_ndims(fspace);
  std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(nd, 1)));
  H5Sget_simple_extent_dims(fspace, dims.data(), nullptr);
  if (start < 0 || count < 0 || nd < 1 || static_cast<hsize_t>(start + count) > dims[0]) {
    H5Sclose(fspace);
    GPPF_THROW("HDF5 dataset ", where, ": rows [", start, ", ", start + count, ") out of range (", nd < 1 ? 0 : dims[0],
               " rows)");
  }
  if (count == 0) {
    H5Sclose(fspace);
    return;
  }
  std::vector<hsize_t> off(dims.size(), 0), cnt = dims;
  off[0] = static_cast<hsize_t>(start);
  cnt[0] = static_cast<hsize_t>(count);
  H5Sselect_hyperslab(fspace, H5S_SELECT_SET, off.data(), nullptr, cnt.data(), nullptr);
  hid_t mspace = H5Screate_simple(nd, cnt.data(), nullptr);
  const herr_t st = read ? H5Dread(ds, native(type), mspace, fspace, H5P_DEFAULT, buf)
                         : H5Dwrite(ds, native(type), mspace, fspace, H5P_DEFAULT, buf);
  H5Sclose(mspace);
  H5Sclose(fspace);
  check(st, read ? "read" : "write", str(where, " rows [", start, ", ", start + count, ")"));
}

}  // namespace

void Dataset::read_rows(std::int64_t start, std::int64_t count, Type type, void* dst) const {
  auto l = lock();
  rows_io(m_id, start, count, type, dst, true, where());
}

void Dataset::write_rows(std::int64_t start, std::int64_t count, Type type, const void* src) const {
  auto l = lock();
  rows_io(m_id, start, count, type, const_cast<void*>(src), false, where());
}

void Dataset::read_all(Type type, void* dst) const {
  auto l = lock();
  check_readable(m_id, where());
  check(H5Dread(m_id, native(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, dst), "read", where());
}

void Dataset::write_all(Type type, const void* src) const {
  auto l = lock();
  check(H5Dwrite(m_id, native(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, src), "write", where());
}

// ---- File --------------------------------------------------------------------------
File File::create(const std::string& path) {
  auto l = lock();
  const hid_t fapl = file_access(true);
  const hid_t fcpl = file_creation();
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl, fapl);
  // Read the error stack before H5Pclose, which clears it.
  const std::string reason = f < 0 ? last_error() : std::string();
  H5Pclose(fcpl);
  H5Pclose(fapl);
  if (f < 0) GPPF_THROW("cannot create HDF5 file ", path, ": ", reason, " (is the folder writable?)");
  return File(f, path, "/");
}

File File::open(const std::string& path, bool writable) {
  auto l = lock();
  if (!std::filesystem::exists(path)) GPPF_THROW("HDF5 file ", path, " does not exist");
  const hid_t fapl = file_access(writable);
  hid_t f = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl);
  const std::string reason = f < 0 ? last_error() : std::string();
  H5Pclose(fapl);
  if (f < 0) GPPF_THROW("cannot open HDF5 file ", path, ": ", reason, " (truncated or not an HDF5 file?)");
  require_checksummed(f, path);
  return File(f, path, "/");
}

namespace {

// The core driver's buffer at close, per in-memory file (id -> sink), under lock(). The callbacks'
// user data is the id, not a pointer: HDF5 copies and frees it on its own schedule.
struct ImageSink {
  std::size_t allocated = 0;  // the driver's buffer
  std::size_t want = 0;       // set by close_to_image: keep this many bytes at close
  std::vector<char> bytes;
};
std::map<std::uintptr_t, ImageSink>& sinks() {
  static std::map<std::uintptr_t, ImageSink> m;
  return m;
}
ImageSink* sink_of(void* udata) {
  const auto it = sinks().find(reinterpret_cast<std::uintptr_t>(udata));
  return it == sinks().end() ? nullptr : &it->second;
}
void* image_malloc(std::size_t size, H5FD_file_image_op_t, void* udata) {
  if (ImageSink* s = sink_of(udata)) s->allocated = size;
  return std::malloc(size);
}
void* image_memcpy(void* dst, const void* src, std::size_t size, H5FD_file_image_op_t, void*) {
  return std::memcpy(dst, src, size);
}
void* image_realloc(void* ptr, std::size_t size, H5FD_file_image_op_t, void* udata) {
  if (ImageSink* s = sink_of(udata)) s->allocated = size;
  return std::realloc(ptr, size);
}
herr_t image_free(void* ptr, H5FD_file_image_op_t op, void* udata) {
  if (ImageSink* s = sink_of(udata); s && op == H5FD_FILE_IMAGE_OP_FILE_CLOSE) {
    if (s->want > 0 && ptr)
      s->bytes.assign(static_cast<const char*>(ptr), static_cast<const char*>(ptr) + std::min(s->want, s->allocated));
    else
      sinks().erase(reinterpret_cast<std::uintptr_t>(udata));  // closed without close_to_image
  }
  std::free(ptr);
  return 0;
}
void* udata_copy(void* udata) { return udata; }
herr_t udata_free(void*) { return 0; }

// The core driver without a backing store; `increment` is how the memory grows. Its buffer goes to
// a new sink, whose id is returned in `image`.
hid_t in_memory_access(std::size_t increment, std::uintptr_t& image) {
  static std::uintptr_t next = 0;
  image = ++next;
  sinks()[image] = ImageSink{};
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_core(fapl, std::max<std::size_t>(increment, std::size_t{1} << 20), 0);
  checksummed_format(fapl);
  H5FD_file_image_callbacks_t callbacks = {
      image_malloc, image_memcpy, image_realloc, image_free, udata_copy, udata_free, reinterpret_cast<void*>(image)};
  H5Pset_file_image_callbacks(fapl, &callbacks);
  return fapl;
}

}  // namespace

File File::create_in_memory(const std::string& name, std::size_t expected_bytes) {
  auto l = lock();
  // Headroom for HDF5's own metadata: one allocation for the usual file.
  std::uintptr_t image = 0;
  const hid_t fapl = in_memory_access(expected_bytes + expected_bytes / 16 + (std::size_t{1} << 20), image);
  const hid_t fcpl = file_creation();
  // A name no file on disk has: HDF5 matches files by name, and one it failed to open under `name`
  // earlier (a half-written file of the same step) would stand in for the new one.
  const std::string internal = str("gppf-in-memory-", image, ":", name);
  hid_t f = H5Fcreate(internal.c_str(), H5F_ACC_TRUNC, fcpl, fapl);
  const std::string reason = f < 0 ? last_error() : std::string();
  H5Pclose(fcpl);
  H5Pclose(fapl);
  if (f < 0) {
    sinks().erase(image);
    GPPF_THROW("cannot create HDF5 file ", name, " in memory: ", reason);
  }
  File file(f, name, "/");
  file.m_image = image;
  return file;
}

File File::open_in_memory(const std::string& path) {
  auto l = lock();
  if (!std::filesystem::exists(path)) GPPF_THROW("HDF5 file ", path, " does not exist");
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  std::uintptr_t image = 0;
  const hid_t fapl = in_memory_access(ec ? 0 : static_cast<std::size_t>(size), image);
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl);
  const std::string reason = f < 0 ? last_error() : std::string();
  H5Pclose(fapl);
  if (f < 0) {
    sinks().erase(image);
    GPPF_THROW("cannot open HDF5 file ", path, ": ", reason, " (truncated or not an HDF5 file?)");
  }
  require_checksummed(f, path);
  File file(f, path, "/");
  file.m_image = image;
  return file;
}

std::vector<char> File::close_to_image() {
  auto l = lock();
  GPPF_CHECK(m_image != 0 && m_id >= 0, "HDF5 file ", m_path, " is not an open in-memory file");
  flush();
  // The file's size (its end of file); the driver's buffer is larger.
  const ssize_t n = check(H5Fget_file_image(m_id, nullptr, 0), "get the file image size", m_path);
  sinks()[m_image].want = static_cast<std::size_t>(n);
  close();
  std::vector<char> out = std::move(sinks()[m_image].bytes);
  sinks().erase(m_image);
  // Closing gives back unused space of HDF5's block aggregators: the file ends at the superblock's
  // end-of-file address, not at n. Superblock v2 (HDF5 file format specification, "Superblock"):
  // signature (8 bytes), version, size of offsets, size of lengths, flags, then base address,
  // extension address and end-of-file address, 8 bytes each here.
  const auto byte = [&](std::size_t i) { return static_cast<std::uint8_t>(out[i]); };
  GPPF_CHECK(out.size() >= 48 && byte(8) == 2 && byte(9) == 8, "HDF5 file ", m_path,
             ": unexpected superblock at close (version ", out.size() > 8 ? byte(8) : 0, ")");
  std::uint64_t eof = 0;
  for (int i = 7; i >= 0; --i) eof = (eof << 8) | byte(28 + static_cast<std::size_t>(i));
  GPPF_CHECK(eof <= out.size(), "HDF5 file ", m_path, ": end of file ", eof, " past the ", out.size(),
             " bytes at close");
  out.resize(static_cast<std::size_t>(eof));
  return out;
}

void File::flush() const {
  auto l = lock();
  check(H5Fflush(m_id, H5F_SCOPE_LOCAL), "flush", m_path);
}

void File::close() {
  if (m_id < 0) return;
  auto l = lock();
  const herr_t st = H5Fclose(m_id);
  m_id = -1;
  if (st < 0) GPPF_THROW("HDF5 close failed for ", m_path, ": ", last_error());
}

void atomic_write(const std::string& path, const std::function<void(const std::string& tmp_path)>& write) {
  static std::atomic<int> counter{0};
  const std::string tmp = str(path, ".tmp-", ::getpid(), "-", counter++);
  try {
    write(tmp);
    std::filesystem::rename(tmp, path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

}  // namespace gppf::io::h5
