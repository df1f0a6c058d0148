#include "src/train/predict.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "core/error.hpp"
#include "kernels/cast.hpp"
#include "src/train/trainer.hpp"

namespace gppf::train {

namespace fs = std::filesystem;

InputImage read_image(const std::string& file, int channels) {
  std::error_code ec;
  const auto status = fs::status(file, ec);
  GPPF_CHECK(fs::exists(status), file, ": no such file");
  GPPF_CHECK(fs::is_regular_file(status), file, ": not a regular file");
  std::ifstream in(file, std::ios::binary);
  GPPF_CHECK(in, file, ": cannot open (", std::strerror(errno), ")");
  const std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  GPPF_CHECK(io::sniff_image(bytes.data(), bytes.size()) != io::ImageFormat::Unknown, file,
             ": not a PNG or JPEG image");
  return {file, io::decode_image(bytes.data(), bytes.size(), channels, file)};
}

io::InputFormat task_input_format(const TrainConfig& config, const TaskSpec& spec) {
  return io::input_format(spec.manifest, eval_loader_config(config, spec, "test", Device::host()), spec.config.dataset);
}

Tensor make_inputs(const std::vector<InputImage>& images, const io::InputFormat& format) {
  const auto n = static_cast<std::int64_t>(images.size());
  Tensor x = Tensor::empty({n, format.height, format.width, format.channels}, DType::F32);
  const std::int64_t per_image = std::int64_t{format.height} * format.width * format.channels;
  for (std::int64_t i = 0; i < n; ++i) {
    const io::Image& im = images[static_cast<std::size_t>(i)].image;
    io::image_to_input(im.pixels.data(), im.height, im.width, im.channels, format, x.data_as<float>() + i * per_image);
  }
  return x;
}

std::string output_class_name(const TaskSpec& spec, int index) {
  if (spec.config.type == io::TaskType::Segmentation) {
    if (index == 0) return "background";
    --index;
  }
  return spec.manifest.classes.at(static_cast<std::size_t>(index));
}

namespace {

// A host f32 copy of the network's output.
Tensor host_f32(const Network& net, const Tensor& t) {
  const Tensor f = t.dtype() == DType::F32 ? t : kernels::cast(t, DType::F32, net.stream());
  return f.device().is_host() ? f : f.to(Device::host(), net.stream());
}

// Ranked by (logit descending, index ascending), as the evaluation's top-k counts them.
std::vector<ClassScore> top_classes(const float* logits, int classes, int k) {
  std::vector<int> order(static_cast<std::size_t>(classes));
  for (int c = 0; c < classes; ++c) order[static_cast<std::size_t>(c)] = c;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  const double top = logits[order.front()];
  double sum = 0;
  for (int c = 0; c < classes; ++c) sum += std::exp(static_cast<double>(logits[c]) - top);
  std::vector<ClassScore> out;
  for (int r = 0; r < std::min(k, classes); ++r) {
    const int c = order[static_cast<std::size_t>(r)];
    out.push_back({c, static_cast<float>(std::exp(static_cast<double>(logits[c]) - top) / sum)});
  }
  return out;
}

// A colour per class: background keeps the image, the others are blended with a distinct hue.
std::array<std::uint8_t, 3> class_colour(int index) {
  static const std::uint8_t palette[][3] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},
                                            {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230},
                                            {210, 245, 60}, {250, 190, 212}};
  const auto& p = palette[static_cast<std::size_t>(index - 1) % std::size(palette)];
  return {p[0], p[1], p[2]};
}

// The image in RGB with each pixel's predicted class (`pred`, h x w of the network) blended over
// it at half strength; the mask is stretched to the image's size (nearest).
io::Image overlay(const io::Image& image, const std::vector<std::int32_t>& pred, int h, int w) {
  io::Image out;
  out.height = image.height;
  out.width = image.width;
  out.channels = 3;
  out.pixels.resize(static_cast<std::size_t>(out.height) * out.width * 3);
  for (int y = 0; y < out.height; ++y) {
    const int my = std::min(h - 1, static_cast<int>((static_cast<std::int64_t>(y) * h + h / 2) / out.height));
    for (int x = 0; x < out.width; ++x) {
      const int mx = std::min(w - 1, static_cast<int>((static_cast<std::int64_t>(x) * w + w / 2) / out.width));
      const int cls = pred[static_cast<std::size_t>(my) * w + mx];
      const std::size_t i = static_cast<std::size_t>(y) * out.width + x;
      const std::uint8_t* src = image.pixels.data() + i * image.channels;
      for (int k = 0; k < 3; ++k) {
        const int v = image.channels >= 3 ? src[k] : src[0];
        out.pixels[i * 3 + k] =
            cls == 0 ? static_cast<std::uint8_t>(v) : static_cast<std::uint8_t>((v + class_colour(cls)[k] + 1) / 2);
      }
    }
  }
  return out;
}

// OUT/<file stem>.<task>.png, made unique within the run (two inputs may share a stem).
std::string overlay_path(const std::string& dir, const std::string& file, const std::string& task,
                         std::set<std::string>& used) {
  const std::string stem = fs::path(file).stem().string();
  std::string name = stem + "." + task + ".png";
  for (int i = 2; used.count(name); ++i) name = stem + "-" + std::to_string(i) + "." + task + ".png";
  used.insert(name);
  return (fs::path(dir) / name).string();
}

void write_file(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    GPPF_CHECK(out, "cannot write ", tmp);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    GPPF_CHECK(out.flush(), "cannot write ", tmp, " (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  GPPF_CHECK(!ec, "cannot rename ", tmp, " to ", path, ": ", ec.message());
}

}  // namespace

std::vector<ImagePrediction> predict(Network& net, const TrainConfig& config, int task,
                                     const std::vector<std::string>& files, const PredictOptions& options) {
  GPPF_CHECK(options.top_k > 0, "predict: --top-k must be positive (got ", options.top_k, ")");
  const TaskSpec& spec = net.tasks().at(static_cast<std::size_t>(task));
  const io::InputFormat format = task_input_format(config, spec);
  const std::size_t batch = static_cast<std::size_t>(
      options.batch_size > 0 ? options.batch_size : eval_loader_config(config, spec, "test", net.device()).batch_size);
  if (!options.overlay_dir.empty()) {
    std::error_code ec;
    fs::create_directories(options.overlay_dir, ec);
    GPPF_CHECK(fs::is_directory(options.overlay_dir), "predict: cannot create --out ", options.overlay_dir,
               ec ? ": " + ec.message() : std::string());
  }
  std::set<std::string> used_names;
  std::vector<ImagePrediction> result;
  for (std::size_t first = 0; first < files.size(); first += batch) {
    const std::size_t n = std::min(files.size() - first, batch);
    std::vector<InputImage> images;
    for (std::size_t i = 0; i < n; ++i) images.push_back(read_image(files[first + i], spec.manifest.channels));
    const TaskOutputs out = net.infer(task, make_inputs(images, format), options.score_threshold);
    const Tensor logits = out.logits.defined() ? host_f32(net, out.logits) : Tensor();
    for (std::size_t i = 0; i < n; ++i) {
      const io::Image& im = images[i].image;
      ImagePrediction p;
      p.file = images[i].file;
      p.height = im.height;
      p.width = im.width;
      p.resized = im.height != format.height || im.width != format.width;
      const auto b = static_cast<std::int64_t>(i);
      switch (spec.config.type) {
        case io::TaskType::Classification: {
          const int c = static_cast<int>(logits.dim(1));
          p.top = top_classes(logits.data_as<float>() + b * c, c, options.top_k);
          break;
        }
        case io::TaskType::Detection: {
          // Network input pixels to the image's: the stretch undone, then clipped to the image.
          const float sx = static_cast<float>(im.width) / static_cast<float>(format.width);
          const float sy = static_cast<float>(im.height) / static_cast<float>(format.height);
          const auto fw = static_cast<float>(im.width), fh = static_cast<float>(im.height);
          for (Detection d : out.detections[i]) {
            d.x1 = std::clamp(d.x1 * sx, 0.0f, fw);
            d.x2 = std::clamp(d.x2 * sx, 0.0f, fw);
            d.y1 = std::clamp(d.y1 * sy, 0.0f, fh);
            d.y2 = std::clamp(d.y2 * sy, 0.0f, fh);
            p.boxes.push_back(d);
          }
          break;
        }
        case io::TaskType::Segmentation: {
          const int c = static_cast<int>(logits.dim(3));
          const std::size_t pixels = static_cast<std::size_t>(format.height) * format.width;
          const float* l = logits.data_as<float>() + b * static_cast<std::int64_t>(pixels) * c;
          std::vector<std::int32_t> pred(pixels);
          p.fractions.assign(static_cast<std::size_t>(c), 0.0);
          for (std::size_t k = 0; k < pixels; ++k) {
            const float* row = l + k * static_cast<std::size_t>(c);
            pred[k] = static_cast<std::int32_t>(std::max_element(row, row + c) - row);  // as the evaluation
            p.fractions[static_cast<std::size_t>(pred[k])] += 1.0;
          }
          for (double& f : p.fractions) f /= static_cast<double>(pixels);
          if (!options.overlay_dir.empty()) {
            p.overlay = overlay_path(options.overlay_dir, p.file, spec.config.name, used_names);
            write_file(p.overlay, io::encode_png(overlay(im, pred, format.height, format.width)));
          }
          break;
        }
      }
      result.push_back(std::move(p));
    }
  }
  return result;
}

nlohmann::json predictions_json(const TaskSpec& spec, const std::vector<ImagePrediction>& predictions) {
  nlohmann::json out = nlohmann::json::array();
  for (const ImagePrediction& p : predictions) {
    nlohmann::json j = {{"file", p.file},
                        {"task", spec.config.name},
                        {"type", io::task_name(spec.config.type)},
                        {"height", p.height},
                        {"width", p.width},
                        {"resized", p.resized},
                        {"input_height", spec.height},
                        {"input_width", spec.width}};
    switch (spec.config.type) {
      case io::TaskType::Classification:
        j["classes"] = nlohmann::json::array();
        for (const ClassScore& s : p.top)
          j["classes"].push_back(
              {{"class", output_class_name(spec, s.index)}, {"index", s.index}, {"probability", s.probability}});
        break;
      case io::TaskType::Detection:
        j["boxes"] = nlohmann::json::array();
        for (const Detection& d : p.boxes)
          j["boxes"].push_back({{"class", output_class_name(spec, d.cls)},
                                {"index", d.cls},
                                {"score", d.score},
                                {"x0", d.x1},
                                {"y0", d.y1},
                                {"x1", d.x2},
                                {"y1", d.y2}});
        break;
      case io::TaskType::Segmentation:
        j["pixel_fractions"] = nlohmann::json::object();
        for (std::size_t c = 0; c < p.fractions.size(); ++c)
          j["pixel_fractions"][output_class_name(spec, static_cast<int>(c))] = p.fractions[c];
        if (!p.overlay.empty()) j["overlay"] = p.overlay;
        break;
    }
    out.push_back(std::move(j));
  }
  return out;
}

std::string predictions_text(const TaskSpec& spec, const std::vector<ImagePrediction>& predictions,
                             const PredictOptions& options) {
  std::string out;
  char buf[256];
  for (const ImagePrediction& p : predictions) {
    out += printable(p.file) + ": " + io::task_name(spec.config.type) + " '" + printable(spec.config.name) + "'";
    if (p.resized)
      out += str(" (resized from ", p.height, "x", p.width, " to the network's ", spec.height, "x", spec.width, ")");
    switch (spec.config.type) {
      case io::TaskType::Classification:
        out += "\n";
        for (const ClassScore& s : p.top) {
          std::snprintf(buf, sizeof buf, "  %.4f  ", static_cast<double>(s.probability));
          out += buf + printable(output_class_name(spec, s.index)) + "\n";
        }
        break;
      case io::TaskType::Detection:
        std::snprintf(buf, sizeof buf, ": %zu boxes scoring >= %.2f\n", p.boxes.size(),
                      static_cast<double>(options.score_threshold));
        out += buf;
        for (const Detection& d : p.boxes) {
          std::snprintf(buf, sizeof buf, "  %.4f  x0 %.1f  y0 %.1f  x1 %.1f  y1 %.1f  ", static_cast<double>(d.score),
                        static_cast<double>(d.x1), static_cast<double>(d.y1), static_cast<double>(d.x2),
                        static_cast<double>(d.y2));
          out += buf + printable(output_class_name(spec, d.cls)) + "\n";
        }
        break;
      case io::TaskType::Segmentation:
        out += ": share of pixels per class\n";
        for (std::size_t c = 0; c < p.fractions.size(); ++c) {
          std::snprintf(buf, sizeof buf, "  %.4f  ", p.fractions[c]);
          out += buf + printable(output_class_name(spec, static_cast<int>(c))) + "\n";
        }
        if (!p.overlay.empty()) out += "  overlay written to " + printable(p.overlay) + "\n";
        break;
    }
  }
  return out;
}

}  // namespace gppf::train
