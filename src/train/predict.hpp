#pragma once
// gppf predict: one task of a trained network run on image files (PNG or JPEG). An image becomes the
// network's input exactly as the task's evaluation loader makes a stored image into it
// (io::image_to_input: the data set's channel count, its normalisation); an image of another size is
// stretched to the input size, and boxes and overlays are mapped back to the image's own pixels.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/image_codec.hpp"
#include "io/loader.hpp"
#include "src/train/network.hpp"

namespace gppf::train {

struct PredictOptions {
  int top_k = 5;                 // classification: classes listed per image
  float score_threshold = 0.3f;  // detection: boxes scoring below are left out
  std::string overlay_dir;       // segmentation: one overlay PNG per image written here ("": none)
  int batch_size = 0;            // images per forward pass (0: as the task's evaluation loader)
};

// An image file decoded into `channels` channels (pass the task's data set's: the loader decodes
// its stored images so). Errors name the file.
struct InputImage {
  std::string file;
  io::Image image;
};
InputImage read_image(const std::string& file, int channels);

// The input format of a task: what its evaluation loader produces from its data set.
io::InputFormat task_input_format(const TrainConfig& config, const TaskSpec& spec);
// The network input of `images`: f32 [N, H, W, C] on the host.
Tensor make_inputs(const std::vector<InputImage>& images, const io::InputFormat& format);

struct ClassScore {
  int index = 0;
  float probability = 0;  // softmax over the task's classes
};

struct ImagePrediction {
  std::string file;
  int height = 0, width = 0;      // of the image file
  bool resized = false;           // its size is not the network's input size: stretched to fit
  std::vector<ClassScore> top;    // classification: the top-k classes, most probable first
  std::vector<Detection> boxes;   // detection: in the image's pixels, clipped to it, best first
  std::vector<double> fractions;  // segmentation: per class (0: background), share of pixels
  std::string overlay;            // segmentation: the overlay PNG written ("" without overlay_dir)
};

// Runs task `task` of `net` (trained with `config`) on the files; writes the overlays. The passes
// take the evaluation's batch size, so files in a test split's order run in its evaluation's batches.
std::vector<ImagePrediction> predict(Network& net, const TrainConfig& config, int task,
                                     const std::vector<std::string>& files, const PredictOptions& options);

// Class `index` of a task's outputs: segmentation's 0 is "background", then the data set's classes.
std::string output_class_name(const TaskSpec& spec, int index);

// One JSON array: per image {file, task, type, height, width, resized, input_height, input_width}
// and `classes` | `boxes` | `pixel_fractions` (+ `overlay`).
nlohmann::json predictions_json(const TaskSpec& spec, const std::vector<ImagePrediction>& predictions);
// Readable lines: a header line per image, then one line per class, box or class fraction.
std::string predictions_text(const TaskSpec& spec, const std::vector<ImagePrediction>& predictions,
                             const PredictOptions& options);

}  // namespace gppf::train
