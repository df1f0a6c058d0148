#pragma once
// COCO segmentation masks: run-length encoding (column-major, counts alternate 0s and 1s starting
// with 0s), its compressed string form, and polygon rasterisation, following pycocotools' maskApi.c
// so that converted masks match what the COCO tools compute.
#include <cstdint>
#include <string>
#include <vector>

namespace gppf::io {

// A row-major h*w 0/1 mask from counts; throws when the counts do not add up to h*w.
std::vector<std::uint8_t> rle_decode(const std::vector<std::uint32_t>& counts, int h, int w);
std::vector<std::uint32_t> rle_encode(const std::uint8_t* mask, int h, int w);
// pycocotools' compressed "counts" string (LEB128-like, 6 bits per character, offset 48).
std::vector<std::uint32_t> rle_from_string(const std::string& s);
std::string rle_to_string(const std::vector<std::uint32_t>& counts);
// One polygon [x0, y0, x1, y1, ...] in pixel coordinates rasterised like pycocotools' rleFrPoly.
std::vector<std::uint32_t> rle_from_polygon(const std::vector<double>& xy, int h, int w);

}  // namespace gppf::io
