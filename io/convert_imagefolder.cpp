// Image folders: <src>/<class>/**.png|jpg, or <src>/{train,val,test}/<class>/** to keep splits. The
// file bytes are stored unchanged (decoded once here to check them and record their size), except
// that transparent images decoded without alpha are composited onto --background first.
#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "core/error.hpp"
#include "core/log.hpp"
#include "io/convert.hpp"
#include "io/file_util.hpp"
#include "io/image_codec.hpp"

namespace fs = std::filesystem;

namespace gppf::io {

Manifest convert_imagefolder(const ImageFolderOptions& folder, const ConvertOptions& opt) {
  GPPF_CHECK(fs::is_directory(folder.src), "convert imagefolder: ", folder.src, " is not a folder");
  check_channels("imagefolder", folder.channels);
  auto subdirs = [](const std::string& d) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(d))
      if (e.is_directory()) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  };
  // split -> folder holding that split's class folders
  std::vector<std::pair<std::string, std::string>> roots;
  for (const char* s : {"train", "val", "test"})
    if (fs::is_directory(folder.src + "/" + s)) roots.emplace_back(s, folder.src + "/" + s);
  auto has_split = [&](const char* name) {
    return std::any_of(roots.begin(), roots.end(), [&](const auto& r) { return r.first == name; });
  };
  const bool has_val = has_split("val"), has_test = has_split("test");
  if (roots.empty()) roots.emplace_back("", folder.src);
  std::set<std::string> class_set;
  for (const auto& [split, root] : roots)
    for (const auto& c : subdirs(root)) class_set.insert(c);
  GPPF_CHECK(!class_set.empty(), "convert imagefolder: no class folders in ", folder.src);
  const std::vector<std::string> classes(class_set.begin(), class_set.end());

  Manifest h;
  h.task = TaskType::Classification;
  h.classes = classes;
  h.encoding = "encoded";
  h.channels = folder.channels;
  h.block = 64;
  // --background only where it applies (with 4 channels the alpha is kept, and the CLI refuses it)
  std::vector<std::pair<std::string, std::string>> options = {{"channels", std::to_string(folder.channels)}};
  if (folder.channels != 4) options.emplace_back("background", std::to_string(folder.background));
  h.source = source_text("imagefolder", folder.src, options, opt);
  DatasetWriter writer(opt.out, {h, opt.shard_samples, std::int64_t(256) << 20, 0, opt.force});
  std::int64_t index = 0, skipped = 0;
  int common_h = -1, common_w = -1;
  for (const auto& [split, root] : roots) {
    for (std::size_t c = 0; c < classes.size(); ++c) {
      const std::string dir = root + "/" + classes[c];
      if (!fs::is_directory(dir)) continue;
      for (const std::string& file : list_images(dir)) {
        const std::int64_t id = index++;
        try {
          Sample s;
          Image im;
          s.image = flatten_transparency(read_file(file), folder.channels, folder.background, file, im);
          s.height = im.height;
          s.width = im.width;
          s.channels = im.channels;
          s.label = static_cast<std::int32_t>(c);
          s.id = id;
          // keyed by the path below the split's folder: stable when other files come or go
          const std::string sp =
              carve_split(opt, split, fnv1a(fs::relative(file, root).generic_string()), has_val, has_test);
          writer.add(sp, std::move(s), file);
          if (common_h < 0) {
            common_h = im.height;
            common_w = im.width;
          } else if (common_h != im.height || common_w != im.width) {
            common_h = common_w = 0;
          }
        } catch (const Error& e) {
          if (!opt.skip_bad) throw;
          ++skipped;
          log::warn("convert imagefolder: skipped ", e.reason());
        }
      }
    }
  }
  if (common_h > 0) {  // all images share one size: record it, so loaders need not be told
    writer.header().height = common_h;
    writer.header().width = common_w;
  }
  Manifest m = writer.finish();
  log::info("convert imagefolder: ", opt.out, ": ", index - skipped, " images, ", classes.size(), " classes",
            skipped ? str(", ", skipped, " skipped") : std::string());
  return m;
}

}  // namespace gppf::io
