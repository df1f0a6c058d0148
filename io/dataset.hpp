#pragma once
// The sharded HDF5 data set format (docs/DATA_FORMAT.md): a folder with manifest.json and one or more
// HDF5 shards per split. DatasetWriter builds one atomically; Dataset and ShardReader read it back.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/h5.hpp"

namespace gppf::io {

inline constexpr int kFormatVersion = 1;

enum class TaskType { Classification, Detection, Segmentation };
const char* task_name(TaskType t);
TaskType parse_task(const std::string& name);

// Pixel coordinates, x right and y down, (0,0) the top-left corner of the top-left pixel;
// cls indexes Manifest::classes.
struct Box {
  float x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  std::int32_t cls = 0;
  friend bool operator==(const Box&, const Box&) = default;
};

// One sample as stored.
struct Sample {
  std::vector<std::uint8_t> image;          // raw HWC bytes ("raw") or PNG/JPEG file bytes ("encoded")
  int height = 0, width = 0, channels = 0;  // of the decoded image
  std::int32_t label = -1;                  // class index; -1 for scenes without one label
  std::vector<Box> boxes;
  // Class id per pixel (0 background, c+1 for class c, 255 ignore), H*W raw bytes in raw data sets,
  // PNG bytes (8-bit gray) in encoded ones; empty when the data set has no masks.
  std::vector<std::uint8_t> mask;
  std::int64_t id = 0;  // index in the source, kept for error messages and for users
};

struct ShardInfo {
  std::string file;  // relative to the data set folder
  std::int64_t count = 0;
  std::int64_t bytes = 0;
  std::string sha256;
};

struct SplitInfo {
  std::string name;
  std::int64_t count = 0;
  std::vector<ShardInfo> shards;
};

struct Manifest {
  int version = kFormatVersion;
  TaskType task = TaskType::Classification;
  std::vector<std::string> classes;
  std::string encoding = "raw";  // "raw" or "encoded" (PNG/JPEG bytes)
  int height = 0, width = 0;     // 0: images differ in size (encoded data sets only)
  int channels = 1;
  bool has_boxes = false, has_masks = false;
  std::int64_t block = 256;       // samples per read (the chunk size of raw shards)
  std::vector<double> mean, std;  // per channel, pixel/255 units, over the train split
  std::string source;             // free text: where the data came from
  std::vector<SplitInfo> splits;

  bool raw() const { return encoding == "raw"; }
  const SplitInfo* find_split(const std::string& name) const;
  // Throws naming the data set and listing the splits it has.
  const SplitInfo& split(const std::string& name, const std::string& where) const;
  std::string to_json() const;
  // Parses and validates the schema; `where` names the file in errors.
  static Manifest from_json(const std::string& text, const std::string& where);
};

// An opened data set: its folder and manifest.
class Dataset {
 public:
  static Dataset open(const std::string& dir);
  const Manifest& manifest() const { return m_manifest; }
  const std::string& dir() const { return m_dir; }
  std::string shard_path(const ShardInfo& shard) const { return m_dir + "/" + shard.file; }

 private:
  std::string m_dir;
  Manifest m_manifest;
};

// Builds a data set in `<out>.tmp-<pid>` and renames it to `out` in finish(); a writer destroyed
// before finish() removes its temporary folder, so no half-written data set is ever left behind.
class DatasetWriter {
 public:
  struct Options {
    Manifest header;  // task, classes, encoding, size, channels, fields, block, source
    std::int64_t shard_samples = 16384;
    std::int64_t shard_bytes = std::int64_t(128) << 20;
    int deflate = 4;  // raw images and masks
    bool force = false;
  };
  DatasetWriter(std::string out_dir, Options options);
  ~DatasetWriter();
  DatasetWriter(const DatasetWriter&) = delete;
  DatasetWriter& operator=(const DatasetWriter&) = delete;

  // Validates and buffers one sample; `what` names its source in errors.
  void add(const std::string& split, Sample sample, const std::string& what);
  // Writes the remaining shards, the checksums and the manifest, then renames into place.
  Manifest finish();
  std::int64_t count(const std::string& split) const;
  // The manifest header, adjustable until finish() (e.g. the image size once it is known).
  Manifest& header() { return m_opt.header; }

 private:
  struct SplitState;
  SplitState& state(const std::string& split);
  void flush(SplitState& s);
  std::string m_out, m_tmp;
  Options m_opt;
  std::vector<std::unique_ptr<SplitState>> m_splits;
  std::vector<double> m_sum, m_sumsq;
  std::int64_t m_stat_pixels = 0;
  bool m_done = false;
};

// Validates a sample against the manifest; throws gppf::Error starting with `what`.
void validate_sample(const Manifest& m, const Sample& s, const std::string& what);
// CRC-32 over everything stored for a sample (image, label, boxes, mask), checked on every read.
std::uint32_t sample_crc(const Sample& s);

// Reads samples of one shard. Not thread-safe by itself (HDF5 is serialised by h5::lock()).
class ShardReader {
 public:
  ShardReader(const std::string& path, const Manifest& manifest, std::int64_t expected_count);
  std::int64_t size() const { return m_count; }
  const std::string& path() const { return m_path; }
  // Samples [start, start + count) with their stored crc; does not verify them.
  void read(std::int64_t start, std::int64_t count, std::vector<Sample>& out, std::vector<std::uint32_t>& crc) const;

 private:
  std::string m_path;
  const Manifest* m_manifest;
  h5::File m_file;
  std::int64_t m_count = 0;
  std::vector<std::int64_t> m_image_offsets, m_box_offsets, m_mask_offsets;
};

// Writes `text` to `path` atomically.
void write_text_file(const std::string& path, const std::string& text);
std::string read_text_file(const std::string& path);

}  // namespace gppf::io
