// Seed inputs for every target, made with the writers themselves so that they follow the formats as
// they are now (scripts/fuzz-corpus.sh adds the repository's configs and manifests).
#include <filesystem>
#include <fstream>

#include "fuzz/targets.hpp"
#include "io/coco_mask.hpp"
#include "io/dataset.hpp"
#include "io/image_codec.hpp"
#include "src/train/checkpoint.hpp"

namespace gppf::fuzz {
namespace {

namespace fs = std::filesystem;

void put(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}
void put(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
  put(path, std::string(bytes.begin(), bytes.end()));
}

io::Image image(int h, int w, int c) {
  io::Image im{h, w, c, std::vector<std::uint8_t>(static_cast<std::size_t>(h * w * c))};
  for (std::size_t i = 0; i < im.pixels.size(); ++i) im.pixels[i] = static_cast<std::uint8_t>(i * 37 % 251);
  return im;
}

void image_seeds(const fs::path& dir) {
  put(dir / "gray.png", io::encode_png(image(5, 3, 1)));
  put(dir / "rgb.png", io::encode_png(image(4, 4, 3)));
  put(dir / "rgba.png", io::encode_png(image(2, 3, 4)));
  put(dir / "gray.jpg", io::encode_jpeg(image(8, 8, 1)));
  put(dir / "rgb.jpg", io::encode_jpeg(image(9, 7, 3), 50));
}

// Shards of the two manifests that fuzz_shard reads with (raw and encoded detection with masks).
io::Manifest shard_seeds(const fs::path& dir, bool raw) {
  io::Manifest h;
  h.task = io::TaskType::Detection;
  h.classes = {"a", "b"};
  h.encoding = raw ? "raw" : "encoded";
  h.height = h.width = raw ? 8 : 0;
  h.has_boxes = h.has_masks = true;
  h.block = 16;
  const fs::path out = dir / (raw ? "raw-set" : "encoded-set");
  io::DatasetWriter w(out.string(), {h, 16, std::int64_t(1) << 20, 1, true});
  for (int i = 0; i < 20; ++i) {
    io::Sample s;
    const io::Image im = image(8, raw ? 8 : 6 + i % 3, 1);
    s.height = im.height, s.width = im.width, s.channels = 1;
    s.image = raw ? im.pixels : io::encode_png(im);
    s.label = -1;
    s.boxes = {{1, 1, 4, 5, i % 2}};
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(s.height * s.width), 0);
    mask[3] = static_cast<std::uint8_t>(1 + i % 2);
    s.mask = raw ? mask : io::encode_png(io::Image{s.height, s.width, 1, mask});
    s.id = i;
    w.add(i < 16 ? "train" : "val", std::move(s), "seed");
  }
  io::Manifest m = w.finish();
  for (const auto& e : fs::recursive_directory_iterator(out))
    if (e.path().extension() == ".h5")
      fs::copy_file(e.path(), dir / (std::string(raw ? "raw-" : "encoded-") + e.path().filename().string()));
  fs::remove_all(out);
  return m;
}

const char* kCoco = R"({"images": [{"id": 1, "file_name": "a.png", "height": 6, "width": 5},
 {"id": 2, "file_name": "b.jpg", "height": 8, "width": 8}],
 "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
 "annotations": [
  {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 3], "iscrowd": 0,
   "segmentation": [[1, 1, 3, 1, 3, 4, 1, 4]]},
  {"id": 2, "image_id": 2, "category_id": 7, "bbox": [0, 0, 4, 4], "iscrowd": 1,
   "segmentation": {"size": [8, 8], "counts": [3, 5, 3, 5, 48]}},
  {"id": 3, "image_id": 2, "category_id": 3, "bbox": [2, 2, 3, 3], "iscrowd": 1,
   "segmentation": {"size": [8, 8], "counts": "@RLE@"}}]})";

void checkpoint_seed(const fs::path& dir) {
  nn::Parameter w{"w", Tensor::from_vector({2, 3}, {1, 2, 3, 4, 5, 6}), Tensor::zeros({2, 3}, DType::F32)};
  train::CheckpointTensors t;
  t.params.push_back(&w);
  train::CheckpointMeta meta;
  meta.step = 1;
  meta.config_yaml = "seed: 1\n";
  meta.optimizer_type = "sgd";
  meta.complete = true;
  fs::create_directories(dir);
  train::write_checkpoint((dir / "step-1.h5").string(), meta, t);
}

}  // namespace

void write_seeds(const std::string& root) {
  const fs::path dir(root);
  image_seeds(dir / "image");
  const io::Manifest raw = shard_seeds(dir / "shard", true);
  const io::Manifest enc = shard_seeds(dir / "shard", false);
  put(dir / "manifest" / "raw.json", raw.to_json());
  put(dir / "manifest" / "encoded.json", enc.to_json());
  std::string coco = kCoco;
  coco.replace(coco.find("@RLE@"), 5, io::rle_to_string({10, 4, 4, 4, 42}));
  put(dir / "coco" / "small.json", coco);
  checkpoint_seed(dir / "checkpoint");
}

}  // namespace gppf::fuzz
