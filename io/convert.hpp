#pragma once
// `gppf convert`: source formats into the sharded HDF5 format (io/dataset.hpp).
#include <cstdint>
#include <string>
#include <vector>

#include "io/dataset.hpp"

namespace gppf::io {

struct ConvertOptions {
  std::string out;
  bool force = false;
  std::uint64_t seed = 0;
  // Fractions of the samples that go to val and test when the source has no such split.
  double val_fraction = 0.0;
  double test_fraction = 0.0;
  std::int64_t shard_samples = 16384;
  bool skip_bad = false;  // skip (and count) bad source samples instead of failing
};

// The split of a sample (by its index in a source without splits): a seeded hash, so the answer does
// not depend on the order in which samples are visited.
std::string derive_split(std::uint64_t seed, std::int64_t index, double val_fraction, double test_fraction);

// MNIST-family IDX files (plain or gzipped) in `src`: train-images*/train-labels*, and
// t10k-* or test-* for the test split.
struct IdxOptions {
  std::string src;
  std::vector<std::string> classes;  // empty: "0", "1", ...
};
Manifest convert_idx(const IdxOptions& idx, const ConvertOptions& opt);

// One sub-folder per class (PNG or JPEG files); `src/{train,val,test}/<class>/` keeps those splits.
struct ImageFolderOptions {
  std::string src;
  int channels = 3;
};
Manifest convert_imagefolder(const ImageFolderOptions& folder, const ConvertOptions& opt);

// COCO-style JSON: images, categories, annotations with bbox and polygon or RLE segmentation.
// `src` is one JSON file (splits derived from the seed) or a folder whose *.json files are named
// after their split (instances_train*.json, ...). Images are found under `images` (default: the
// JSON's folder), also in a sub-folder named like the JSON's split.
struct CocoOptions {
  std::string src;
  std::string images;
  int channels = 3;
};
Manifest convert_coco(const CocoOptions& coco, const ConvertOptions& opt);

// Scenes composed by pasting objects (samples of a converted classification data set) onto a blank
// canvas or onto background photos; boxes and masks come from the pasted pixels.
struct CanvasOptions {
  std::string src;          // a converted classification data set (e.g. data/mnist)
  std::string backgrounds;  // folder of PNG/JPEG photos; empty: a blank (black) canvas
  int size = 64;            // square canvas side
  int min_objects = 1, max_objects = 4;
  double scale_min = 1.0, scale_max = 1.0;  // object scale relative to its source size
  // "none": objects never overlap (placement retried, dropped after 50 tries); "allow": any overlap;
  // a number in (0,1): at most that fraction of an object may be covered.
  std::string overlap = "none";
  int channels = 0;           // 0: 1 on a blank canvas, 3 on backgrounds
  int alpha_threshold = 128;  // object pixels with alpha (or gray value) >= this enter the mask
  // Non-empty: every object gets this one class (class-agnostic scenes: localisation without the
  // source's categories); objects and placements are the same as without it.
  std::string single_class;
  // Scenes per split; 0: as many as the source split has samples.
  std::int64_t train = 0, val = 0, test = 0;
};
Manifest convert_canvas(const CanvasOptions& canvas, const ConvertOptions& opt);

}  // namespace gppf::io
