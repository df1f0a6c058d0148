#pragma once
// The streaming loader: one per task. Worker threads read (HDF5, serialised), decode and augment
// whole batches; a bounded prefetch queue hands them out in order. The sample order depends only on
// (seed, epoch, rank, world) and the data set, never on the number of threads, and the position can
// be saved and restored so that a resumed run sees exactly the batches it would have seen.
//
// Order of an epoch: the split's samples form blocks (Manifest::block consecutive samples of one
// shard, the unit of reading); the blocks are permuted by (seed, epoch); rank r takes every
// world-th block from position r (a disjoint share); its samples are shuffled within windows of
// `shuffle_window` blocks by (seed, epoch, rank, window). With drop_last, every rank's epoch has
// the same number of batches (the smallest share), so ranks stay in step.
//
// Data-parallel replicas (`shares` > 1) all follow one order and each decodes and augments only its
// part of every batch: samples [b share / shares, b (share + 1) / shares) of a batch of b.
// Augmentation draws per sample, so a part is exactly that slice of the whole batch. Encoded data
// sets (contiguous bytes) are then read sample by sample: a replica reads only its samples' bytes.
// Raw ones are chunked and deflated by blocks, the smallest read; a batch mixes many blocks, so a
// replica still reads nearly every block (bench/bench_loader.cpp: sample-by-sample reads of a raw
// set cost ~150x more CPU per sample than block reads).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "io/augment.hpp"
#include "io/dataset.hpp"

namespace gppf::io {

enum class OnError {
  Fail,  // throw gppf::Error naming the file and the sample
  Skip   // leave the sample out of its batch, count it and keep its reason (Loader::stats)
};
OnError parse_on_error(const std::string& name);

struct LoaderConfig {
  std::string split = "train";
  int batch_size = 32;
  int workers = 2;
  int prefetch = 4;  // batches prepared ahead of next()
  std::uint64_t seed = 0;
  int rank = 0, world = 1;
  int share = 0, shares = 1;  // this replica's part of every batch (see above)
  bool shuffle = true;
  bool drop_last = true;
  bool repeat = true;         // false: one epoch, then next() reports the end
  int height = 0, width = 0;  // output size; 0: the data set's (needed for variable-size sets)
  int channels = 0;           // 0: the data set's; else 1 or 3 (converted)
  // Per channel, pixel/255 units: out = (pixel/255 - mean) / std. Empty: the manifest's train-split
  // statistics (mean 0, std 1 when it has none).
  std::vector<float> mean, std;
  AugmentConfig augment;
  OnError on_error = OnError::Fail;
  int shuffle_window = 16;  // blocks whose samples are mixed together
  bool pinned = true;       // page-locked batch memory when a CUDA device is present
};

// What a loader makes of every image: the network input's size, channels and normalisation.
struct InputFormat {
  int height = 0, width = 0, channels = 0;
  std::vector<float> mean, inv_std;  // per output channel: out = (pixel/255 - mean) * inv_std
};
// The format of a loader over data set `m` (folder `dir`, for errors) with `config`: its size and
// channels, else the data set's; its mean/std, else the manifest's train-split statistics.
InputFormat input_format(const Manifest& m, const LoaderConfig& config, const std::string& dir);

// One decoded 8-bit HWC image (h x w, c channels) into dst, f32 [fmt.height, fmt.width, fmt.channels],
// as a loader writes it: channels converted (RGB to grey by 299/587/114), the window resampled
// (bilinear) unless augmentation is off and the size already fits, colour jitter, then normalised.
void write_input(const std::uint8_t* px, int h, int w, int c, const InputFormat& fmt, const Window& win,
                 const AugmentConfig& augment, Rng& rng, float* dst);
// The same without augmentation: the whole image, stretched to the format's size when it differs
// (what an evaluation loader does; gppf predict uses it on image files).
void image_to_input(const std::uint8_t* px, int h, int w, int c, const InputFormat& fmt, float* dst);

struct Batch {
  Tensor images;                        // f32 [B, H, W, C], normalised
  Tensor labels;                        // i32 [B] (-1 for scenes without one label)
  std::vector<std::vector<Box>> boxes;  // per image, output pixel coordinates (data sets with boxes)
  Tensor masks;                         // i32 [B, H, W]: 0 background, c+1 class c, 255 ignore (data sets with masks)
  std::vector<std::int64_t> ids;        // sample index within the split (shard order)
  std::int64_t epoch = 0, index = 0;    // this is batch `index` of `epoch`
  std::int64_t skipped = 0;             // samples dropped by the skip policy
  std::int64_t bytes_read = 0;          // sample bytes read from the shards to build it (see LoaderStats)
  std::vector<std::string> skip_reasons;
  std::int64_t size() const { return static_cast<std::int64_t>(ids.size()); }
};

// Where the stream stands: the next batch to be returned, and what fixes the order.
struct LoaderState {
  std::string split;
  std::uint64_t seed = 0;
  int rank = 0, world = 1;
  std::int64_t epoch = 0, batch = 0;
  std::string to_json() const;
  static LoaderState from_json(const std::string& text);
  friend bool operator==(const LoaderState&, const LoaderState&) = default;
};

struct LoaderStats {
  std::int64_t batches = 0, samples = 0, skipped = 0;
  // Stored bytes of the samples read from the shards (image, mask and boxes as the shard holds them;
  // a block read ahead counts once, with the batch that needed it first).
  std::int64_t bytes_read = 0;
  std::vector<std::string> skip_reasons;  // the first 100
};

class Loader {
 public:
  Loader(const Dataset& dataset, const LoaderConfig& config);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch; false at the end of a non-repeating loader. Rethrows a worker's error.
  bool next(Batch& out);
  // As above; throws at the end of a non-repeating loader.
  Batch next();

  std::int64_t epoch() const;  // of the next batch
  std::int64_t batches_per_epoch(std::int64_t epoch) const;
  LoaderState state() const;
  // Continues from `state` (same split, seed, rank and world), dropping prepared batches.
  void restore(const LoaderState& state);
  LoaderStats stats() const;

  const Manifest& manifest() const;
  int height() const;
  int width() const;
  int channels() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> m_impl;
};

}  // namespace gppf::io
