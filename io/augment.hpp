#pragma once
// Sample geometry and colour augmentations. Every geometric augmentation (resize, random resized
// crop, scale jitter, flip) is one source window mapped onto the output, so images (bilinear), masks
// (nearest) and boxes (exact) always move together.
#include <cstdint>
#include <vector>

#include "io/dataset.hpp"
#include "io/random.hpp"

namespace gppf::io {

struct AugmentConfig {
  bool enabled = false;
  // Random resized crop: the crop covers a fraction in [crop_area_min, crop_area_max] of the image,
  // with aspect ratio (w/h) in [crop_ratio_min, crop_ratio_max] (log-uniform). 1, 1: off.
  double crop_area_min = 1.0, crop_area_max = 1.0;
  double crop_ratio_min = 3.0 / 4.0, crop_ratio_max = 4.0 / 3.0;
  // Scale jitter: zoom by s in [scale_min, scale_max] (s < 1 pads with the fill value), the window
  // placed at random.
  double scale_min = 1.0, scale_max = 1.0;
  double hflip = 0.0;  // probability of a horizontal flip
  // Colour jitter: factors drawn from [1 - x, 1 + x].
  double brightness = 0.0, contrast = 0.0, saturation = 0.0;
  // A box keeping less than this fraction of its area inside the output is dropped.
  double min_box_visible = 0.25;
};

// The source window (continuous pixel coordinates, may extend past the image) shown in the output.
struct Window {
  double x0 = 0, y0 = 0, w = 0, h = 0;
  bool flip = false;
  int out_h = 0, out_w = 0;
};

// The whole image when augmentation is off; otherwise crop, scale jitter and flip drawn from rng.
Window plan_window(const AugmentConfig& aug, int src_h, int src_w, int out_h, int out_w, Rng& rng);

// Bilinear resampling of an 8-bit HWC image into floats (0..255 scale); outside the image: fill.
void resample_image(const std::uint8_t* src, int h, int w, int c, const Window& win, float fill, float* dst);
// Nearest-neighbour resampling of a class-id mask; outside the image: 255 (ignore).
void resample_mask(const std::uint8_t* src, int h, int w, const Window& win, std::int32_t* dst);
// Boxes in output coordinates, clipped; boxes mostly outside are dropped.
std::vector<Box> transform_boxes(const std::vector<Box>& boxes, const Window& win, double min_visible);
// Brightness, contrast and saturation jitter on floats (0..255 scale), clamped to [0, 255].
void colour_jitter(const AugmentConfig& aug, int pixels, int c, Rng& rng, float* px);

}  // namespace gppf::io
