#pragma once
// PNG (libpng's simplified API) and JPEG (the plain libjpeg API, libjpeg-turbo underneath) decoding
// and encoding into 8-bit HWC pixels.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gppf::io {

enum class ImageFormat { Unknown, Png, Jpeg };
// Recognises PNG and JPEG by their magic bytes.
ImageFormat sniff_image(const std::uint8_t* data, std::size_t size);
const char* image_format_name(ImageFormat f);

struct Image {
  int height = 0, width = 0, channels = 0;
  std::vector<std::uint8_t> pixels;  // HWC
};

// Decodes PNG or JPEG bytes. channels: 0 keeps the file's own (1 gray, 3 RGB, 4 with alpha), else
// converts to 1, 3 or 4. Throws gppf::Error starting with `what` (file and sample) on bad bytes.
Image decode_image(const std::uint8_t* data, std::size_t size, int channels, const std::string& what);
// The same into `out`, reusing its memory (hot loops keep one Image per thread).
void decode_image_into(const std::uint8_t* data, std::size_t size, int channels, const std::string& what, Image& out);
std::vector<std::uint8_t> encode_png(const Image& image);
std::vector<std::uint8_t> encode_jpeg(const Image& image, int quality = 90);

}  // namespace gppf::io
