#pragma once
// A small RAII layer over the HDF5 C API, shared by the data sets (issue 4) and the checkpoints.
// Every call is checked; errors are gppf::Error naming the file, the object and HDF5's own reason.
// HDF5 as packaged here is not built thread-safe, so every call made through this layer holds one
// process-wide recursive mutex; callers that chain several calls may hold h5::lock() themselves.
// Only the serial API is used: the GPU machine has serial HDF5, this one parallel HDF5.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace gppf::io::h5 {

using hid = std::int64_t;  // hid_t without including <hdf5.h> in every user

std::unique_lock<std::recursive_mutex> lock();

// Element types that the wrapper reads and writes.
enum class Type { U8, I32, U32, I64, F32, F64 };
template <class T>
Type type_of();

// Owns one HDF5 identifier; closes it with the matching H5*close.
class Handle {
 public:
  Handle() = default;
  Handle(hid id, std::string path, std::string name);
  ~Handle();
  Handle(Handle&& o) noexcept;
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid id() const { return m_id; }
  bool valid() const { return m_id >= 0; }
  // "file.h5:/group/name" for error messages.
  std::string where() const;
  const std::string& path() const { return m_path; }
  const std::string& name() const { return m_name; }

 protected:
  void reset();
  hid m_id = -1;
  std::string m_path;
  std::string m_name;
};

class Dataset;

struct DatasetOptions {
  std::vector<std::int64_t> chunk;  // empty: contiguous
  int deflate = 0;                  // 0: no compression, 1..9 zlib level
};

// Attributes and children of a group (the file's root group is a Group too).
class Group : public Handle {
 public:
  using Handle::Handle;
  Group create_group(const std::string& name) const;
  Group open_group(const std::string& name) const;
  bool has(const std::string& name) const;

  using CreateOptions = DatasetOptions;
  Dataset create_dataset(const std::string& name, Type type, const std::vector<std::int64_t>& dims,
                         const CreateOptions& options = {}) const;
  Dataset open_dataset(const std::string& name) const;
  // Creates a dataset with `values` as its contents.
  template <class T>
  Dataset write(const std::string& name, const std::vector<std::int64_t>& dims, const std::vector<T>& values,
                const CreateOptions& options = {}) const;
  // Reads a whole dataset; checks the element count against its dims.
  template <class T>
  std::vector<T> read(const std::string& name) const;

  void set_attr(const std::string& name, const std::string& value) const;
  void set_attr(const std::string& name, std::int64_t value) const;
  void set_attr(const std::string& name, double value) const;
  bool has_attr(const std::string& name) const;
  std::string attr_string(const std::string& name) const;
  std::int64_t attr_int(const std::string& name) const;
  double attr_double(const std::string& name) const;
};

class Dataset : public Handle {
 public:
  using Handle::Handle;
  std::vector<std::int64_t> dims() const;
  Type type() const;
  // Rows [start, start + count) along dimension 0 into dst (count * row elements of type).
  void read_rows(std::int64_t start, std::int64_t count, Type type, void* dst) const;
  void write_rows(std::int64_t start, std::int64_t count, Type type, const void* src) const;
  void read_all(Type type, void* dst) const;
  void write_all(Type type, const void* src) const;
};

class File : public Group {
 public:
  File() = default;
  // Creates (truncating) a file for writing.
  static File create(const std::string& path);
  static File open(const std::string& path, bool writable = false);
  // A file that lives in memory only (HDF5's core driver): nothing touches the disk, so a full disk
  // cannot fail an HDF5 call half-way (HDF5 1.10 then leaks handles that crash its exit-time cleanup).
  // `name` names it in errors; `expected_bytes` sizes the first allocation. close_to_image() gives its bytes.
  static File create_in_memory(const std::string& name, std::size_t expected_bytes = 0);
  // `path` read into memory, writable there; changes never reach `path` (write close_to_image() yourself).
  static File open_in_memory(const std::string& path);
  // An in-memory file's bytes as HDF5 leaves them when it closes the file (now). Not
  // H5Fget_file_image: for the checksummed format its superblock checksum is stale in HDF5 1.10.
  std::vector<char> close_to_image();
  void flush() const;
  // Closes now and reports a failure (the destructor closes silently).
  void close();

 private:
  using Group::Group;
  std::uintptr_t m_image = 0;  // in-memory files: where the core driver's buffer goes at close
};

// Writes `path` atomically: `write` fills a temporary file next to it, which is renamed over `path`
// only when `write` returns; on an exception the temporary is removed and `path` is untouched.
void atomic_write(const std::string& path, const std::function<void(const std::string& tmp_path)>& write);

// The innermost HDF5 error message of the current thread's error stack ("" when none).
std::string last_error();

}  // namespace gppf::io::h5
