#include "io/h5.hpp"

#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>

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

// File access: read-only opens take no lock (data sets are read by many ranks at once, and Lustre or
// GPFS may not support flock); writers lock where the file system can.
hid_t file_access(bool writable) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
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
  hid_t g =
      check(H5Gcreate2(m_id, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), "create group", m_path + ":" + full);
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
  bool empty = false;
  for (auto v : dims) empty = empty || v == 0;
  if (!options.chunk.empty() && !empty) {
    std::vector<hsize_t> c(options.chunk.begin(), options.chunk.end());
    for (std::size_t i = 0; i < c.size() && i < d.size(); ++i) c[i] = std::max<hsize_t>(1, std::min(c[i], d[i]));
    check(H5Pset_chunk(dcpl, static_cast<int>(c.size()), c.data()), "set chunking", where);
    if (options.deflate > 0) check(H5Pset_deflate(dcpl, static_cast<unsigned>(options.deflate)), "set deflate", where);
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
  hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  // Read the error stack before H5Pclose, which clears it.
  const std::string reason = f < 0 ? last_error() : std::string();
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
  return File(f, path, "/");
}

namespace {

// The core driver without a backing store; `increment` is how the memory grows.
hid_t in_memory_access(std::size_t increment) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_core(fapl, std::max<std::size_t>(increment, std::size_t{1} << 20), 0);
  return fapl;
}

}  // namespace

File File::create_in_memory(const std::string& name, std::size_t expected_bytes) {
  auto l = lock();
  // Headroom for HDF5's own metadata: one allocation for the usual file.
  const hid_t fapl = in_memory_access(expected_bytes + expected_bytes / 16 + (std::size_t{1} << 20));
  hid_t f = H5Fcreate(name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  const std::string reason = f < 0 ? last_error() : std::string();
  H5Pclose(fapl);
  if (f < 0) GPPF_THROW("cannot create HDF5 file ", name, " in memory: ", reason);
  return File(f, name, "/");
}

File File::open_in_memory(const std::string& path) {
  auto l = lock();
  if (!std::filesystem::exists(path)) GPPF_THROW("HDF5 file ", path, " does not exist");
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  const hid_t fapl = in_memory_access(ec ? 0 : static_cast<std::size_t>(size));
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl);
  const std::string reason = f < 0 ? last_error() : std::string();
  H5Pclose(fapl);
  if (f < 0) GPPF_THROW("cannot open HDF5 file ", path, ": ", reason, " (truncated or not an HDF5 file?)");
  return File(f, path, "/");
}

std::vector<char> File::image() const {
  auto l = lock();
  flush();
  const ssize_t n = check(H5Fget_file_image(m_id, nullptr, 0), "get the file image", m_path);
  std::vector<char> out(static_cast<std::size_t>(n));
  check(H5Fget_file_image(m_id, out.data(), out.size()), "get the file image", m_path);
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
