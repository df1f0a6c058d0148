#include "io/image_codec.hpp"

#include <jpeglib.h>
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>

#include "core/error.hpp"

namespace gppf::io {

ImageFormat sniff_image(const std::uint8_t* data, std::size_t size) {
  static const std::uint8_t png[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
  if (size >= 8 && std::memcmp(data, png, 8) == 0) return ImageFormat::Png;
  if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return ImageFormat::Jpeg;
  return ImageFormat::Unknown;
}

const char* image_format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::Png: return "png";
    case ImageFormat::Jpeg: return "jpeg";
    default: return "unknown";
  }
}

namespace {

// A header is a few bytes and may claim 65535x65535 pixels: 12 GiB and minutes of decoding for a
// 100-byte file. 2^26 pixels (8192x8192) is far above any image a data set here holds.
constexpr std::uint64_t kMaxPixels = std::uint64_t{1} << 26;

png_uint_32 png_format(int channels) {
  switch (channels) {
    case 1: return PNG_FORMAT_GRAY;
    case 3: return PNG_FORMAT_RGB;
    default: return PNG_FORMAT_RGBA;
  }
}

void decode_png(const std::uint8_t* data, std::size_t size, int channels, const std::string& what, Image& out) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, data, size)) GPPF_THROW(what, ": undecodable PNG (", img.message, ")");
  if (static_cast<std::uint64_t>(img.width) * img.height > kMaxPixels) {
    png_image_free(&img);
    GPPF_THROW(what, ": PNG of ", img.width, "x", img.height, " pixels, more than the ", kMaxPixels, " accepted");
  }
  int native = (img.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
  if (img.format & PNG_FORMAT_FLAG_ALPHA) native = native == 3 ? 4 : 2;
  if (channels == 0) channels = native == 2 ? 4 : native;
  GPPF_CHECK(channels == 1 || channels == 3 || channels == 4, what, ": cannot decode into ", channels, " channels");
  img.format = png_format(channels);
  out.height = static_cast<int>(img.height);
  out.width = static_cast<int>(img.width);
  out.channels = channels;
  out.pixels.resize(PNG_IMAGE_SIZE(img));
  // Dropping alpha composites onto `background`; without one libpng composites onto whatever the
  // (reused) buffer held before, so transparent pixels would show the previous image.
  png_color background{0, 0, 0};
  if (!png_image_finish_read(&img, &background, out.pixels.data(), 0, nullptr)) {
    const std::string msg = img.message;
    png_image_free(&img);
    GPPF_THROW(what, ": undecodable PNG (", msg, ")");
  }
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_silent(j_common_ptr, int) {}

// No C++ objects with destructors live between setjmp and a longjmp: the caller owns the buffer.
bool decode_jpeg_raw(const std::uint8_t* data, std::size_t size, int channels, Image* out, char* message) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_silent;
  if (setjmp(err.jump)) {
    std::snprintf(message, JMSG_LENGTH_MAX, "%s", err.message);
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  if (static_cast<std::uint64_t>(cinfo.image_width) * cinfo.image_height > kMaxPixels) {
    std::snprintf(message, JMSG_LENGTH_MAX, "%ux%u pixels, more than the %llu accepted", cinfo.image_width,
                  cinfo.image_height, static_cast<unsigned long long>(kMaxPixels));
    jpeg_destroy_decompress(&cinfo);
    return false;
  }
  const int native = cinfo.num_components == 1 ? 1 : 3;
  const int want = channels == 0 ? native : channels;
  cinfo.out_color_space = want == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  out->height = static_cast<int>(cinfo.output_height);
  out->width = static_cast<int>(cinfo.output_width);
  out->channels = want;
  const int got = cinfo.output_components;
  const std::size_t row = static_cast<std::size_t>(out->width) * static_cast<std::size_t>(got);
  out->pixels.resize(static_cast<std::size_t>(out->height) * out->width * want);
  std::uint8_t* tmp = want == got ? nullptr : new std::uint8_t[row];
  while (cinfo.output_scanline < cinfo.output_height) {
    const std::size_t y = cinfo.output_scanline;
    std::uint8_t* dst = out->pixels.data() + y * out->width * want;
    JSAMPROW rows[1] = {tmp ? tmp : dst};
    jpeg_read_scanlines(&cinfo, rows, 1);
    if (tmp)  // RGB -> RGBA
      for (int x = 0; x < out->width; ++x) {
        dst[4 * x] = tmp[3 * x];
        dst[4 * x + 1] = tmp[3 * x + 1];
        dst[4 * x + 2] = tmp[3 * x + 2];
        dst[4 * x + 3] = 255;
      }
  }
  delete[] tmp;
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

}  // namespace

Image decode_image(const std::uint8_t* data, std::size_t size, int channels, const std::string& what) {
  Image out;
  decode_image_into(data, size, channels, what, out);
  return out;
}

void decode_image_into(const std::uint8_t* data, std::size_t size, int channels, const std::string& what, Image& out) {
  GPPF_CHECK(channels == 0 || channels == 1 || channels == 3 || channels == 4, what, ": cannot decode into ", channels,
             " channels (1, 3 or 4)");
  switch (sniff_image(data, size)) {
    case ImageFormat::Png: decode_png(data, size, channels, what, out); return;
    case ImageFormat::Jpeg: {
      char message[JMSG_LENGTH_MAX] = {0};
      if (!decode_jpeg_raw(data, size, channels, &out, message)) GPPF_THROW(what, ": undecodable JPEG (", message, ")");
      return;
    }
    default: GPPF_THROW(what, ": not a PNG or JPEG image (", size, " bytes, unknown magic)");
  }
}

std::vector<std::uint8_t> encode_png(const Image& image) {
  GPPF_CHECK(image.channels == 1 || image.channels == 3 || image.channels == 4, "encode_png: ", image.channels,
             " channels");
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = static_cast<png_uint_32>(image.width);
  img.height = static_cast<png_uint_32>(image.height);
  img.format = png_format(image.channels);
  png_alloc_size_t size = 0;
  GPPF_CHECK(png_image_write_to_memory(&img, nullptr, &size, 0, image.pixels.data(), 0, nullptr),
             "encode_png: ", img.message);
  std::vector<std::uint8_t> out(size);
  GPPF_CHECK(png_image_write_to_memory(&img, out.data(), &size, 0, image.pixels.data(), 0, nullptr),
             "encode_png: ", img.message);
  out.resize(size);
  return out;
}

namespace {

bool encode_jpeg_raw(const Image& image, int quality, unsigned char** buf, unsigned long* size, char* message) {
  jpeg_compress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  if (setjmp(err.jump)) {
    std::snprintf(message, JMSG_LENGTH_MAX, "%s", err.message);
    jpeg_destroy_compress(&cinfo);
    return false;
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, buf, size);
  cinfo.image_width = static_cast<JDIMENSION>(image.width);
  cinfo.image_height = static_cast<JDIMENSION>(image.height);
  cinfo.input_components = image.channels;
  cinfo.in_color_space = image.channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const std::size_t row = static_cast<std::size_t>(image.width) * image.channels;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW rows[1] = {const_cast<std::uint8_t*>(image.pixels.data()) + cinfo.next_scanline * row};
    jpeg_write_scanlines(&cinfo, rows, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  return true;
}

}  // namespace

std::vector<std::uint8_t> encode_jpeg(const Image& image, int quality) {
  GPPF_CHECK(image.channels == 1 || image.channels == 3, "encode_jpeg: ", image.channels, " channels (1 or 3)");
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  char message[JMSG_LENGTH_MAX] = {0};
  const bool ok = encode_jpeg_raw(image, quality, &buf, &size, message);
  std::vector<std::uint8_t> out;
  if (ok) out.assign(buf, buf + size);
  std::free(buf);
  GPPF_CHECK(ok, "encode_jpeg: ", message);
  return out;
}

}  // namespace gppf::io
