#pragma once
// Tiny synthetic data sets for the training, checkpoint and CLI tests, written in a test's temp dir.
#include <random>
#include <string>
#include <utility>

#include "core/error.hpp"
#include "io/dataset.hpp"
#include "io/loader.hpp"
#include "src/train/config.hpp"

namespace gppf::test {

// 8x8 grey images: class 0 has a bright left half, class 1 a bright right half, plus noise.
inline void write_bars(const std::string& dir, int n_train, int n_test, std::uint64_t seed) {
  io::DatasetWriter::Options o;
  o.header.task = io::TaskType::Classification;
  o.header.classes = {"left", "right"};
  o.header.height = o.header.width = 8;
  o.header.channels = 1;
  o.header.block = 16;
  o.force = true;
  io::DatasetWriter w(dir, o);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> noise(0, 60);
  for (const auto& [split, n] : {std::pair<std::string, int>{"train", n_train}, {"test", n_test}, {"val", n_test}})
    for (int i = 0; i < n; ++i) {
      io::Sample s;
      s.height = s.width = 8;
      s.channels = 1;
      s.label = i % 2;
      s.id = i;
      for (int y = 0; y < 8; ++y)
        for (int x = 0; x < 8; ++x)
          s.image.push_back(static_cast<std::uint8_t>(((x < 4) == (s.label == 0) ? 180 : 20) + noise(rng)));
      w.add(split, s, "bars");
    }
  w.finish();
}

// 16x16 scenes with one bright 4x4..6x6 square of class 0 or 1 (1: brighter), boxes and masks.
inline void write_squares(const std::string& dir, int n_train, int n_test, std::uint64_t seed) {
  io::DatasetWriter::Options o;
  o.header.task = io::TaskType::Detection;
  o.header.classes = {"dim", "bright"};
  o.header.height = o.header.width = 16;
  o.header.channels = 1;
  o.header.has_boxes = o.header.has_masks = true;
  o.header.block = 16;
  o.force = true;
  io::DatasetWriter w(dir, o);
  std::mt19937_64 rng(seed);
  for (const auto& [split, n] : {std::pair<std::string, int>{"train", n_train}, {"test", n_test}, {"val", n_test}})
    for (int i = 0; i < n; ++i) {
      io::Sample s;
      s.height = s.width = 16;
      s.channels = 1;
      s.id = i;
      const int cls = i % 2, size = 4 + static_cast<int>(rng() % 3);
      const int x0 = static_cast<int>(rng() % (16 - size)), y0 = static_cast<int>(rng() % (16 - size));
      s.image.assign(256, 10);
      s.mask.assign(256, 0);
      for (int y = y0; y < y0 + size; ++y)
        for (int x = x0; x < x0 + size; ++x) {
          s.image[static_cast<std::size_t>(y * 16 + x)] = cls ? 250 : 120;
          s.mask[static_cast<std::size_t>(y * 16 + x)] = static_cast<std::uint8_t>(cls + 1);
        }
      s.boxes.push_back({static_cast<float>(x0), static_cast<float>(y0), static_cast<float>(x0 + size),
                         static_cast<float>(y0 + size), cls});
      w.add(split, s, "squares");
    }
  w.finish();
}

// The `tasks:` section the training tests share: classification of dir/bars, detection and
// segmentation of dir/squares.
inline std::string tiny_tasks_yaml(const std::string& dir) {
  return str("tasks:\n  - {name: bars, type: classification, dataset: ", dir,
             "/bars, batch_size: 16}\n  - {name: det, type: detection, dataset: ", dir,
             "/squares, batch_size: 8}\n  - {name: seg, type: segmentation, dataset: ", dir,
             "/squares, batch_size: 8}\n");
}

// The first batch of a task's training split, in file order: the same batch for every network a
// test compares.
inline io::Batch first_batch(const train::TaskConfig& t) {
  io::LoaderConfig lc;
  lc.batch_size = t.batch_size;
  lc.workers = 1;
  lc.pinned = false;
  io::Loader loader(io::Dataset::open(t.dataset), lc);
  return loader.next();
}

}  // namespace gppf::test
