#pragma once
// `gppf convert --format emoji`: emoji artwork (npm emoji-datasource-*) classified by its Unicode
// category, read from the package's emoji.json.
#include <array>
#include <cstdint>
#include <string>

#include "io/convert.hpp"

namespace gppf::io {

struct EmojiOptions {
  std::string src;     // the unpacked package: emoji.json, and the images under img/<set>/<size>/
  std::string images;  // image folder; empty: src/img/google/64
  int size = 64;       // output side; images of another size are resized (bilinear)
  // Colour the transparent parts are composited on (emoji are drawn for light pages).
  std::array<std::uint8_t, 3> background{255, 255, 255};
};

// One raw RGB sample per emoji of emoji.json whose image exists, labelled with its "category"
// (classes in Unicode's order, "Component" left out: skin-tone swatches and hair parts). Skin-tone
// variants are left out too: near-duplicates that would swamp "People & Body" and leak between
// splits. The split is a seeded hash of the emoji's code points, so it does not depend on the order
// of emoji.json or on which other emoji a package version holds.
Manifest convert_emoji(const EmojiOptions& emoji, const ConvertOptions& opt);

}  // namespace gppf::io
