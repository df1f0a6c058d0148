#pragma once
// `gppf convert`: source formats into the sharded HDF5 format (io/dataset.hpp).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/dataset.hpp"
#include "io/image_codec.hpp"

namespace gppf::io {

struct ConvertOptions {
  std::string out;
  bool force = false;
  std::uint64_t seed = 0;
  // val: this fraction of the training source's samples, when the source has no val split (every
  // format has val by default; 0: none). test: this fraction of a source without a test split; a
  // source's own test split is kept as it is. Both chosen per sample by a seeded hash (carve_split).
  double val_fraction = 0.1;
  double test_fraction = 0.0;
  std::int64_t shard_samples = 16384;
  bool skip_bad = false;  // skip (and count) bad source samples instead of failing
};

// The split of a sample with the stable key `index`: "test" with probability test_fraction, else
// "val" with probability val_fraction (of the rest), else "train". A seeded hash, so the answer does
// not depend on the order in which samples are visited nor on the other samples.
std::string derive_split(std::uint64_t seed, std::int64_t index, double val_fraction, double test_fraction);

// The output split of one source sample. Samples of the source's own val and test splits keep them;
// a training sample (source_split "train", or "" for a source without splits) goes to test when the
// source has no test split and derive_split says so, to val when the source has no val split and
// derive_split says so, else to train. `key` names the sample stably (its index in its source file,
// its image id, a hash of its path), so val and train are disjoint by source sample.
std::string carve_split(const ConvertOptions& opt, const std::string& source_split, std::uint64_t key,
                        bool source_has_val, bool source_has_test);

// 64-bit FNV-1a: a stable key for samples named by a path or a code.
std::uint64_t fnv1a(const std::string& s);

// The --channels values a converter accepts ("idx": none, its files decide; docs/DATA_FORMAT.md).
std::vector<int> accepted_channels(const std::string& format);
// Those values as text: "1, 3 or 4" ("" for idx).
std::string channels_text(const std::string& format);
// Throws "convert FORMAT: --channels N (FORMAT accepts ...)" unless `channels` is accepted.
void check_channels(const std::string& format, int channels);
// --background: "white" (255), "black" (0) or a grey level 0..255; throws naming the value.
int parse_background(const std::string& value);

// The manifest's `source`: "FORMAT:SRC key=value ...", one key per option of `gppf convert` (the
// flag without its dashes), `options` first, then seed, fractions, shard size and on-error, so that
// the data set can be rebuilt from its manifest. Values with spaces, quotes or nothing are quoted.
std::string source_text(const std::string& format, const std::string& src,
                        const std::vector<std::pair<std::string, std::string>>& options, const ConvertOptions& opt);
// A number as source_text records it: the shortest text that reads back as the same double.
std::string number_text(double v);

// Encoded image bytes as they are stored for a loader that decodes them into `channels`: when the
// image has transparency (alpha, or a PNG tRNS chunk) and `channels` has no alpha (1 or 3), it is
// composited onto the grey level `background` and re-encoded as PNG (lossless); otherwise the bytes
// are returned unchanged. `decoded` receives the stored image decoded into `channels`.
std::vector<std::uint8_t> flatten_transparency(std::vector<std::uint8_t> bytes, int channels, int background,
                                               const std::string& what, Image& decoded);

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
  int background = 255;  // grey level under transparent pixels with 1 or 3 channels (flatten_transparency)
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
  int background = 255;  // as ImageFolderOptions::background
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
