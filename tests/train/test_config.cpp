// Config parsing: defaults, overrides by dotted path and task name, and one-line errors naming the key.
#include <gtest/gtest.h>

#include <filesystem>

#include "src/train/config.hpp"

namespace gppf::train {
namespace {

const char* kBase = R"(
steps: 100
optimizer: {type: sgd, lr: 0.2, momentum: 0.9}
model: {backbone: gppf-mini, legos: 4, top_k: 2}
tasks:
  - {name: mnist, type: classification, dataset: data/mnist, batch_size: 32}
  - {name: det, type: detection, dataset: data/mnist-det, batch_size: 8, augment: {hflip: 0.5}}
)";

std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(yaml, overrides, "cfg.yaml");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DeviceAndTf32) {
  const auto c = parse_config(kBase, {"device=cuda:1", "tf32=true"}, "cfg.yaml");
  EXPECT_EQ(c.device, "cuda:1");
  EXPECT_TRUE(c.tf32);
  EXPECT_FALSE(parse_config(kBase, {}, "cfg.yaml").tf32);
  const std::string e = error_of(kBase, {"device=gpu0"});
  EXPECT_NE(e.find("cfg.yaml: key 'device': device 'gpu0' is not host, cuda or cuda:N"), std::string::npos) << e;
  EXPECT_NE(error_of(kBase, {"tf32=maybe"}).find("tf32"), std::string::npos);
  EXPECT_EQ(parse_config(kBase, {"device=cuda", "precision=bf16"}, "cfg.yaml").precision, "bf16");
  EXPECT_NE(error_of(kBase, {"precision=bf16"}).find("cfg.yaml: key 'precision': bf16 trains on CUDA only"),
            std::string::npos);
  EXPECT_NE(error_of(kBase, {"device=cuda", "precision=fp16"}).find("key 'precision': 'fp16' is not fp32 or bf16"),
            std::string::npos);
}

// Deterministic mode runs tasks one by one: auto batching becomes off, on is refused naming both keys.
TEST(Config, DeterministicTurnsTaskBatchingOff) {
  EXPECT_FALSE(parse_config(kBase, {}, "cfg.yaml").deterministic);
  const auto c = parse_config(kBase, {"deterministic=true", "device=cuda"}, "cfg.yaml");
  EXPECT_TRUE(c.deterministic);
  EXPECT_EQ(c.task_batching, "off");
  EXPECT_NE(c.resolved_yaml.find("deterministic: true"), std::string::npos) << c.resolved_yaml;
  const std::string e = error_of(kBase, {"deterministic=true", "task_batching=on"});
  EXPECT_NE(e.find("cfg.yaml: key 'task_batching': on is not deterministic"), std::string::npos) << e;
  EXPECT_NE(e.find("deterministic: true"), std::string::npos) << e;
  EXPECT_NE(error_of(kBase, {"deterministic=sometimes"}).find("deterministic"), std::string::npos);
}

TEST(Config, ParsesAndAppliesOverrides) {
  const auto c =
      parse_config(kBase, {"optimizer.lr=0.05", "tasks.det.batch_size=4", "model.routing.warmup=soft"}, "cfg.yaml");
  EXPECT_EQ(c.steps, 100);
  EXPECT_FLOAT_EQ(c.optimizer.lr, 0.05f);
  EXPECT_FLOAT_EQ(c.schedule.base_lr, 0.05f);
  ASSERT_EQ(c.tasks.size(), 2u);
  EXPECT_EQ(c.tasks[1].batch_size, 4);
  EXPECT_EQ(c.tasks[1].type, io::TaskType::Detection);
  EXPECT_TRUE(c.tasks[1].augment.enabled);
  EXPECT_FALSE(c.tasks[0].augment.enabled);
  EXPECT_EQ(c.backbone.routing.warmup, nn::RoutingOptions::Warmup::Soft);
  EXPECT_EQ(c.backbone.stages.size(), 3u);
  // dense heads' context levels: the type's default, or the task's key
  EXPECT_EQ(c.tasks[0].context_levels, -1);
  EXPECT_EQ(c.tasks[1].context_levels, 0);
  EXPECT_EQ(parse_config(kBase, {"tasks.det.type=segmentation"}, "cfg.yaml").tasks[1].context_levels, 3);
  EXPECT_EQ(parse_config(kBase, {"tasks.det.context_levels=2"}, "cfg.yaml").tasks[1].context_levels, 2);
}

// RUN_DIR/config.yaml: every default written out, and loading it gives the same config again.
TEST(Config, TheResolvedConfigWritesEveryDefaultAndReloadsTheSame) {
  const auto c = parse_config(kBase, {"optimizer.lr=0.05"}, "cfg.yaml");
  for (const char* key : {"final_eval_batches: 0", "max_nonfinite_steps: 10", "warmup_steps:", "seed: 1",
                          "balance_weight:", "context_levels: -1", "hflip: 0.5", "crop_area_min:"})
    EXPECT_NE(c.resolved_yaml.find(key), std::string::npos) << key << " in\n" << c.resolved_yaml;
  EXPECT_EQ(c.yaml.find("max_nonfinite_steps"), std::string::npos);  // the checkpoint's text stays as given
  const auto again = parse_config(c.resolved_yaml, {}, "config.yaml");
  EXPECT_EQ(again.resolved_yaml, c.resolved_yaml);
  EXPECT_FLOAT_EQ(again.optimizer.lr, 0.05f);
  EXPECT_EQ(again.schedule.warmup_steps, c.schedule.warmup_steps);
  EXPECT_EQ(again.tasks[0].dataset, std::filesystem::absolute(c.tasks[0].dataset).lexically_normal().string());
  // An absent augment section stays absent: written out, its defaults would turn augmentation on.
  EXPECT_FALSE(again.tasks[0].augment.enabled);
  EXPECT_TRUE(again.tasks[1].augment.enabled);
  EXPECT_FLOAT_EQ(again.tasks[1].augment.hflip, 0.5f);
  EXPECT_EQ(again.tasks[1].context_levels, 0);
}

TEST(Config, ErrorsNameTheKey) {
  EXPECT_NE(error_of(std::string(kBase) + "optimiser: {}\n").find("unknown key 'optimiser'"), std::string::npos);
  EXPECT_NE(error_of(kBase, {"tasks.mnist.batch_sise=3"}).find("unknown key 'tasks.mnist.batch_sise'"),
            std::string::npos);
  EXPECT_NE(error_of(kBase, {"tasks.mnist.batch_size=0"}).find("'tasks.mnist.batch_size' must be >= 1"),
            std::string::npos);
  EXPECT_NE(error_of(kBase, {"model.top_k=5"}).find("'model.top_k' must be in [1, legos = 4]"), std::string::npos);
  EXPECT_NE(error_of(kBase, {"model.legos=60", "model.shared_legos=5"}).find("must be at most 64, got 65"),
            std::string::npos);
  EXPECT_NE(error_of(kBase, {"optimizer.lr=fast"}).find("'optimizer.lr' has a value of the wrong type"),
            std::string::npos);
  EXPECT_NE(error_of(kBase, {"tasks.nope.batch_size=3"}).find("no entry named 'nope'"), std::string::npos);
  EXPECT_NE(error_of(kBase, {"model.backbone=resnet"}).find("'model.backbone'"), std::string::npos);
  EXPECT_NE(error_of(kBase, {"tasks.det.type=pose"}).find("'tasks.det.type'"), std::string::npos);
  EXPECT_NE(error_of(kBase, {"tasks.det.context_levels=9"}).find("'tasks.det.context_levels' must be in [0, 6]"),
            std::string::npos);
  EXPECT_NE(error_of(kBase, {"tasks.mnist.context_levels=1"}).find("'tasks.mnist.context_levels' applies to"),
            std::string::npos);
  EXPECT_NE(error_of("tasks: []\n").find("'tasks' must be a non-empty list"), std::string::npos);
  // A list or a mapping as a key (YAML's `? ...`) is named, not a yaml-cpp exception past our handlers.
  const std::string tasks = "tasks:\n  - {name: mnist, type: classification, dataset: data/mnist}\n";
  EXPECT_NE(error_of(tasks + "model:\n  ? [top_k, legos]\n  : 2\n").find("a key in 'model' is a YAML list"),
            std::string::npos);
  EXPECT_NE(error_of(tasks + "? {a: 1}\n: 2\n").find("a key at the top level is a YAML mapping"), std::string::npos);
  EXPECT_EQ(error_of(kBase), "");
  // Every message names the file.
  EXPECT_EQ(error_of(kBase, {"steps=0"}).rfind("cfg.yaml", 0), 0u);
}

// A name is part of checkpoint and report paths: '/' in it made the final save fail after training.
TEST(Config, TaskNamesAreSafeFileNames) {
  for (const char* bad : {"a/b", "../up", "a b", "x.y", "tab\there"}) {
    const std::string e = error_of(kBase, {str("tasks.mnist.name='", bad, "'")});
    EXPECT_NE(e.find("cfg.yaml: key 'tasks[0].name': '"), std::string::npos) << bad << ": " << e;
    EXPECT_NE(e.find("may use only letters, digits, '_' and '-'"), std::string::npos) << bad << ": " << e;
  }
  EXPECT_EQ(parse_config(kBase, {"tasks.mnist.name=Digits_2-a"}, "cfg.yaml").tasks[0].name, "Digits_2-a");
  EXPECT_NE(error_of(kBase, {"tasks.mnist.name=det"}).find("task name 'det' appears twice"), std::string::npos);
  EXPECT_NE(error_of(kBase, {"tasks.mnist.name=''"}).find("key 'tasks[0].name' is required"), std::string::npos);
}

TEST(Config, AnEmptySetValueIsAnError) {
  const std::string e = error_of(kBase, {"steps="});
  EXPECT_NE(e.find("--set steps=: empty value for key 'steps'"), std::string::npos) << e;
  EXPECT_NE(error_of(kBase, {"tasks.det.batch_size="}).find("empty value for key 'tasks.det.batch_size'"),
            std::string::npos);
  EXPECT_EQ(parse_config(kBase, {"steps=7"}, "cfg.yaml").steps, 7);
}

TEST(Config, DuplicateKeysNameTheKeyAndLine) {
  std::string e = error_of(std::string(kBase) + "steps: 5\n");
  EXPECT_NE(e.find("cfg.yaml:8: key 'steps' is given twice"), std::string::npos) << e;
  e = error_of("steps: 5\noptimizer:\n  lr: 0.1\n  type: sgd\n  lr: 0.2\n");
  EXPECT_NE(e.find("cfg.yaml:5: key 'optimizer.lr' is given twice"), std::string::npos) << e;
  e = error_of("tasks:\n  - {name: a, type: classification, dataset: d, batch_size: 2, batch_size: 3}\n");
  EXPECT_NE(e.find("cfg.yaml:2: key 'tasks[0].batch_size' is given twice"), std::string::npos) << e;
}

TEST(Config, NegativeThreadsAreAnError) {
  EXPECT_NE(error_of(kBase, {"threads=-2"}).find("cfg.yaml: key 'threads' must be >= 0"), std::string::npos);
  EXPECT_EQ(parse_config(kBase, {"threads=3"}, "cfg.yaml").threads, 3);
  EXPECT_EQ(parse_config(kBase, {}, "cfg.yaml").threads, 0);
}

TEST(Config, TheDeviceIsParsedOnce) {
  EXPECT_EQ(parse_config(kBase, {}, "cfg.yaml").target_device, Device::host());
  EXPECT_EQ(parse_config(kBase, {"device=cpu"}, "cfg.yaml").target_device, Device::host());
  const auto c = parse_config(kBase, {"device=cuda:2"}, "cfg.yaml");
  EXPECT_EQ(c.target_device, Device::cuda(2));
  EXPECT_EQ(c.device, "cuda:2");
  EXPECT_EQ(parse_config(kBase, {"device=cuda"}, "cfg.yaml").target_device, Device::cuda(0));
}

TEST(Config, UnknownKeysAndTaskNamesSuggestTheClosest) {
  std::string e = error_of(std::string(kBase) + "optimiser: {}\n");
  EXPECT_NE(e.find("unknown key 'optimiser'; did you mean 'optimizer'? (known here:"), std::string::npos) << e;
  e = error_of(kBase, {"tasks.mnist.batch_sise=3"});
  EXPECT_NE(e.find("did you mean 'batch_size'?"), std::string::npos) << e;
  e = error_of(kBase, {"tasks.minst.batch_size=3"});
  EXPECT_NE(e.find("no entry named 'minst' in that list; did you mean 'mnist'? (there: mnist, det)"), std::string::npos)
      << e;
  EXPECT_EQ(error_of(kBase, {"tasks.zzzzzz.batch_size=3"}).find("did you mean"), std::string::npos);
  EXPECT_EQ(error_of(std::string(kBase) + "xyz: 1\n").find("did you mean"), std::string::npos);
}

}  // namespace
}  // namespace gppf::train
