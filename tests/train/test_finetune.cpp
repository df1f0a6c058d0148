// Transfer: a tiny pre-training on two tasks, then `gppf finetune` to a held-out task. The probe
// loads the pre-trained legos, learns only routers and the new head, picks the top-k; the fine-tune
// keeps that routing; --from-scratch starts from other weights; a conflicting model key is refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "src/train/checkpoint.hpp"
#include "src/train/finetune.hpp"
#include "src/train/network.hpp"
#include "tests/common/datasets.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;
using Values = std::map<std::string, std::vector<float>>;

const char* kModel = R"(
model:
  backbone: gppf-mini
  stem_channels: 4
  stages: [[8, 1, 1], [8, 1, 2]]
  legos: 4
  top_k: 2
  routing: {warmup: noisy, warmup_steps: 10, noise_std: 0.5}
  neck: {first_stage: 0, channels: 8}
)";

class Finetune : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-finetune-" + std::to_string(::getpid()));
    fs::create_directories(s_dir);
    test::write_bars((s_dir / "bars").string(), 256, 64, 1);
    test::write_squares((s_dir / "squares").string(), 128, 32, 2);
    // Pre-training on bars and detection; segmentation of the same scenes is held out.
    const std::string yaml = str(R"(
steps: 40
log_every: 10
threads: 1
optimizer: {type: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0}
schedule: {type: constant}
)",
                                 kModel, R"(
tasks:
  - {name: bars, type: classification, dataset: )",
                                 (s_dir / "bars").string(), R"(, batch_size: 16}
  - {name: det, type: detection, dataset: )",
                                 (s_dir / "squares").string(), R"(, batch_size: 8}
)");
    run_training(parse_config(yaml, {}, "pretrain.yaml"), {(s_dir / "pretrain").string(), ""});
    s_checkpoint = resolve_checkpoint((s_dir / "pretrain").string());
  }
  static void TearDownTestSuite() { fs::remove_all(s_dir); }

  // The held-out task; `model` is spliced in as the fine-tune config's own model section.
  static TrainConfig finetune_config(const std::string& model = "", const std::vector<std::string>& overrides = {}) {
    const std::string yaml = str(R"(
steps: 30
log_every: 5
threads: 1
optimizer: {type: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0}
schedule: {type: constant}
finetune: {probe_steps: 15, probe_lr: 0.2}
)",
                                 model, R"(
tasks:
  - {name: seg, type: segmentation, dataset: )",
                                 (s_dir / "squares").string(), R"(, batch_size: 8}
)");
    return parse_finetune_config(yaml, overrides, "finetune.yaml", read_checkpoint_meta(s_checkpoint).config_yaml,
                                 s_checkpoint);
  }

  static fs::path s_dir;
  static std::string s_checkpoint;
};
fs::path Finetune::s_dir;
std::string Finetune::s_checkpoint;

// Every parameter and buffer of a checkpoint, by name, through the network its config builds.
Values checkpoint_values(const std::string& path) {
  const TrainConfig c = parse_config(read_checkpoint_meta(path).config_yaml, {}, path);
  Network net(c, open_tasks(c).specs);
  ReadOptions ro;
  ro.optimizer = false;
  (void)read_checkpoint(path, {net.parameters(), net.buffers(), {}}, ro);
  Values out;
  for (auto* p : net.parameters()) out[p->name] = p->value.to_float_vector();
  for (const auto& [name, t] : net.buffers()) out[name] = t->to_float_vector();
  return out;
}

Values backbone_values(Network& net) {
  std::vector<nn::Parameter*> params;
  net.backbone().collect_parameters(params);
  Values out;
  for (auto* p : params) out[p->name] = p->value.to_float_vector();
  return out;
}

// "stage1.block0.router.task0" -> "stage1.block0"
std::string layer_of(const std::string& router) { return router.substr(0, router.find(".router.")); }

std::vector<int> top_k(const std::vector<float>& z, int k) {
  std::vector<int> order(z.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b]; });
  order.resize(static_cast<std::size_t>(k));
  std::sort(order.begin(), order.end());
  return order;
}

TEST_F(Finetune, ModelKeysMustMatchTheCheckpoint) {
  // Absent: the checkpoint's backbone.
  const TrainConfig plain = finetune_config();
  EXPECT_EQ(plain.backbone.num_legos, 4);
  EXPECT_EQ(plain.backbone.top_k, 2);
  EXPECT_EQ(plain.backbone.stem_channels, 4);
  ASSERT_EQ(plain.backbone.stages.size(), 2u);
  EXPECT_EQ(plain.finetune.probe_steps, 15);
  // Keys that agree are fine, also when written differently.
  EXPECT_NO_THROW(finetune_config("model: {legos: 4, top_k: 2, stages: [[8, 1, 1], [8, 1, 2]]}\n"));
  auto error_of = [](const std::string& model, const std::vector<std::string>& overrides = {}) -> std::string {
    try {
      finetune_config(model, overrides);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  for (const auto& [model, key] : std::vector<std::pair<std::string, std::string>>{
           {"model: {top_k: 1}\n", "'model.top_k' is 1"},
           {"model: {stem_channels: 8}\n", "'model.stem_channels' is 8"},
           {"model: {neck: {channels: 16}}\n", "'model.neck.channels' is 16"},
           {"model: {backbone: gppf-r50}\n", "'model.backbone' is gppf-r50"}}) {
    const std::string e = error_of(model);
    EXPECT_NE(e.find(key), std::string::npos) << e;
    EXPECT_NE(e.find("finetune.yaml"), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  EXPECT_NE(error_of("", {"model.legos=3"}).find("'model.legos' is 3"), std::string::npos);
  EXPECT_NE(error_of("", {"finetune.probe_step=3"}).find("unknown key 'finetune.probe_step'"), std::string::npos);
  EXPECT_NE(error_of("", {"finetune.probe_steps=0"}).find("'finetune.probe_steps' must be >= 1"), std::string::npos);
}

TEST_F(Finetune, ProbePicksLegosOnTheFrozenNetworkThenFineTunes) {
  const Values pre = checkpoint_values(s_checkpoint);
  const fs::path run = s_dir / "transfer";
  FinetuneOptions o;
  o.checkpoint = s_checkpoint;
  o.run_dir = run.string();
  int probe_checked = 0, finetune_checked = 0;
  o.on_prepared = [&](const std::string& phase, Network& net) {
    std::vector<nn::Parameter*> params;
    net.backbone().collect_parameters(params);
    if (phase == "probe") {
      for (auto* p : params) {
        const auto v = p->value.to_float_vector();
        if (is_router(p->name)) {
          EXPECT_TRUE(p->trainable) << p->name;
          for (float x : v) EXPECT_EQ(x, 0.0f) << p->name;  // uniform soft gates to start
        } else {
          EXPECT_FALSE(p->trainable) << p->name;
          EXPECT_EQ(v, pre.at(p->name)) << p->name << " is not the pre-trained value";
          ++probe_checked;
        }
      }
      // A new task's BN statistics start as the mean over the two pre-training tasks.
      std::vector<nn::Buffer> buffers;
      net.backbone().collect_buffers(buffers);
      for (const auto& [name, t, owner, task] : buffers) {
        const std::string base = name.substr(0, name.rfind(".task"));
        const auto& a = pre.at(base + ".task0");
        const auto& b = pre.at(base + ".task1");
        const auto v = t->to_float_vector();
        for (std::size_t k = 0; k < v.size(); ++k) EXPECT_FLOAT_EQ(v[k], 0.5f * (a[k] + b[k])) << name;
        ++probe_checked;
      }
    } else {
      ASSERT_EQ(phase, "finetune");
      for (auto* p : params) {
        EXPECT_EQ(p->trainable, !is_router(p->name)) << p->name;
        ++finetune_checked;
      }
    }
  };
  const FinetuneResult r = run_finetune(finetune_config(), o);
  EXPECT_GT(probe_checked, 20);
  EXPECT_GT(finetune_checked, 20);
  EXPECT_EQ(r.probe.steps, 15);
  EXPECT_EQ(r.summary.steps, 30);

  // After the probe: the frozen backbone is bit for bit the pre-trained one; the routers learned, and
  // the chosen legos are their top-k.
  const Values probe = checkpoint_values(resolve_checkpoint((run / "probe").string()));
  std::vector<std::string> routers;
  for (const auto& [name, v] : probe) {
    if (name.rfind("head.", 0) == 0 || name.find(".running_") != std::string::npos) continue;
    if (is_router(name))
      routers.push_back(name);
    else
      EXPECT_EQ(v, pre.at(name)) << name << " changed during the probe";
  }
  ASSERT_EQ(routers.size(), 2u);  // one task, two lego layers
  ASSERT_EQ(r.legos.size(), 1u);
  ASSERT_EQ(r.legos[0].size(), 2u);
  bool learned = false;
  for (std::size_t l = 0; l < routers.size(); ++l) {
    const auto& z = probe.at(routers[l]);
    for (float x : z) learned |= x != 0.0f;
    EXPECT_EQ(r.legos[0][l], top_k(z, 2)) << routers[l];
  }
  EXPECT_TRUE(learned);

  // After the fine-tune: routing unchanged, the chosen legos moved, the others did not.
  const Values tuned = checkpoint_values(resolve_checkpoint(run.string()));
  int moved = 0, kept = 0;
  for (std::size_t l = 0; l < routers.size(); ++l) {
    EXPECT_EQ(tuned.at(routers[l]), probe.at(routers[l])) << routers[l];
    const std::string layer = layer_of(routers[l]);
    for (int i = 0; i < 4; ++i) {
      const std::string w = str(layer, ".lego", i, ".conv1.weight");
      const bool chosen = std::count(r.legos[0][l].begin(), r.legos[0][l].end(), i) > 0;
      if (chosen) {
        EXPECT_NE(tuned.at(w), pre.at(w)) << w;
        ++moved;
      } else {
        EXPECT_EQ(tuned.at(w), pre.at(w)) << w;
        ++kept;
      }
    }
  }
  EXPECT_EQ(moved, 4);
  EXPECT_EQ(kept, 4);

  // The fine-tune's loss falls; its run directory is like `gppf train`'s, plus the probe's choice.
  std::ifstream in(run / "metrics.jsonl");
  double first = -1, last = -1;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j["split"] != "train") continue;
    if (first < 0) first = j["loss"].get<double>();
    last = j["loss"].get<double>();
  }
  EXPECT_GT(first, 0);
  EXPECT_LT(last, first);
  std::ifstream sf(run / "summary.json");
  const auto summary = nlohmann::json::parse(sf);
  EXPECT_EQ(summary["steps"], 30);
  EXPECT_TRUE(summary["tasks"]["seg"]["metrics"].contains("miou"));
  // Both phases' times and their sum.
  const double probe_s = summary["phases"]["probe"]["wall_seconds"],
               tune_s = summary["phases"]["finetune"]["wall_seconds"];
  EXPECT_GT(probe_s, 0);
  EXPECT_DOUBLE_EQ(tune_s, summary["wall_seconds"].get<double>());
  EXPECT_DOUBLE_EQ(summary["total_wall_seconds"].get<double>(), probe_s + tune_s);
  EXPECT_EQ(summary["phases"]["finetune"]["steps"], 30);
  std::ifstream tf(run / "transfer.json");
  const auto transfer = nlohmann::json::parse(tf);
  EXPECT_EQ(transfer["tasks"]["seg"]["layers"][layer_of(routers[0])]["legos"], r.legos[0][0]);
  EXPECT_EQ(transfer["checkpoint"], fs::absolute(s_checkpoint).lexically_normal().string());
  EXPECT_TRUE(fs::path(transfer["checkpoint"].get<std::string>()).is_absolute());
}

TEST_F(Finetune, FromScratchStartsFromOtherWeightsAndTrainsTheSameSteps) {
  const Values pre = checkpoint_values(s_checkpoint);
  FinetuneOptions o;
  o.checkpoint = s_checkpoint;
  o.run_dir = (s_dir / "scratch").string();
  o.from_scratch = true;
  int differ = 0, total = 0;
  o.on_prepared = [&](const std::string& phase, Network& net) {
    EXPECT_EQ(phase, "scratch");
    for (const auto& [name, v] : backbone_values(net)) {
      if (is_router(name)) continue;
      ++total;
      differ += v != pre.at(name);
    }
  };
  const FinetuneResult r = run_finetune(finetune_config("", {"steps=3", "finetune.probe_steps=2"}), o);
  EXPECT_GT(total, 20);
  EXPECT_GT(differ, total / 2);   // convolutions differ; a fresh BN affine (1, 0) may equal a trained one
  EXPECT_EQ(r.summary.steps, 5);  // probe_steps + steps: the same number of batches as the transfer
  EXPECT_TRUE(r.legos.empty());
}

// An interruption in the fine-tune phase (its later checkpoints and summary gone): --resume auto does
// not run the finished probe again and ends with the same weights, bit for bit, as the straight run.
TEST_F(Finetune, ResumeAutoSkipsAFinishedProbeAndContinuesBitwise) {
  const TrainConfig c = finetune_config("", {"steps=12", "checkpoint_every=4", "keep_checkpoints=5"});
  FinetuneOptions o;
  o.checkpoint = s_checkpoint;
  o.run_dir = (s_dir / "resume").string();
  const std::int64_t stale = nn::LegoLayer::stale_router_reads();
  const FinetuneResult straight = run_finetune(c, o);
  ASSERT_FALSE(straight.interrupted());
  const Values full = checkpoint_values(resolve_checkpoint(o.run_dir));
  int removed = 0;
  for (const auto& path : list_checkpoints(o.run_dir))
    if (read_checkpoint_meta(path).step > 4) removed += fs::remove(path);
  ASSERT_EQ(removed, 2);
  const std::string kept = list_checkpoints(o.run_dir).front();
  const auto kept_time = fs::last_write_time(kept);
  fs::remove(fs::path(o.run_dir) / "summary.json");
  std::vector<std::string> phases;
  o.on_prepared = [&](const std::string& phase, Network&) { phases.push_back(phase); };
  o.resume = "auto";
  const FinetuneResult resumed = run_finetune(c, o);
  EXPECT_EQ(phases, std::vector<std::string>{"finetune"});
  EXPECT_EQ(resumed.summary.steps, 12);
  EXPECT_EQ(resumed.legos, straight.legos);
  // Probe (routers zeroed, then trained), fine-tune and resume all routed by current host copies.
  EXPECT_EQ(nn::LegoLayer::stale_router_reads(), stale);
  EXPECT_TRUE(fs::exists(fs::path(o.run_dir) / "summary.json"));
  EXPECT_EQ(fs::last_write_time(kept), kept_time);  // resumed after step 4: that checkpoint is not rewritten
  const Values again = checkpoint_values(resolve_checkpoint(o.run_dir));
  ASSERT_EQ(again.size(), full.size());
  for (const auto& [name, v] : full) EXPECT_EQ(again.at(name), v) << name;
  // Only "auto": a path would not say which phase it belongs to.
  o.resume = "step-4.h5";
  EXPECT_THROW(run_finetune(c, o), Error);
}

// GPPF-ViT transfers the same way: pre-trained on bars and detection, the probe picks k MLP legos in
// every block for the held-out segmentation task, and fine-tuning starts from the pre-trained
// patch embedding.
TEST_F(Finetune, VitProbePicksMlpLegosInEveryBlock) {
  const std::string vit_model = R"(
model:
  backbone: gppf-vit
  vit: {patch: 4, dim: 16, depth: 2, heads: 2}
  legos: 3
  top_k: 2
  routing: {warmup: none}
  neck: {first_stage: 0, channels: 8}
)";
  const std::string yaml =
      str("steps: 20\nlog_every: 10\nthreads: 1\noptimizer: {type: adamw, lr: 0.003}\n", "schedule: {type: constant}\n",
          vit_model, "tasks:\n  - {name: bars, type: classification, dataset: ", (s_dir / "bars").string(),
          ", batch_size: 16}\n  - {name: det, type: detection, dataset: ", (s_dir / "squares").string(),
          ", batch_size: 8}\n");
  const fs::path pre = s_dir / "vit-pretrain";
  run_training(parse_config(yaml, {}, "vit-pretrain.yaml"), {pre.string(), ""});
  const std::string ckpt = resolve_checkpoint(pre.string());
  const std::string ft =
      str("steps: 6\nlog_every: 3\nthreads: 1\noptimizer: {type: adamw, lr: 0.003}\n",
          "schedule: {type: constant}\nfinetune: {probe_steps: 4, probe_lr: 0.01}\n",
          "tasks:\n  - {name: seg, type: segmentation, dataset: ", (s_dir / "squares").string(), ", batch_size: 8}\n");
  const TrainConfig c =
      parse_finetune_config(ft, {}, "vit-finetune.yaml", read_checkpoint_meta(ckpt).config_yaml, ckpt);
  ASSERT_TRUE(c.backbone.vit);
  FinetuneOptions o;
  o.checkpoint = ckpt;
  o.run_dir = (s_dir / "vit-finetune").string();
  std::vector<float> pretrained, at_probe;
  o.on_prepared = [&](const std::string& phase, Network& net) {
    if (phase != "probe") return;
    for (auto* p : net.parameters())
      if (p->name == "patch_embed.weight") at_probe = p->value.to_float_vector();
  };
  {
    TrainConfig pc = parse_config(yaml, {}, "vit-pretrain.yaml");
    Network net(pc, open_tasks(pc).specs);
    ReadOptions ro;
    ro.exact = false;
    ro.optimizer = false;
    (void)read_checkpoint(ckpt, {net.parameters(), net.buffers(), {}}, ro);
    for (auto* p : net.parameters())
      if (p->name == "patch_embed.weight") pretrained = p->value.to_float_vector();
  }
  const FinetuneResult r = run_finetune(c, o);
  EXPECT_EQ(r.summary.steps, 6);
  ASSERT_EQ(r.legos.size(), 1u);
  ASSERT_EQ(r.legos[0].size(), 2u);  // one MLP lego layer per block
  for (const auto& layer : r.legos[0]) EXPECT_EQ(layer.size(), 2u);
  ASSERT_FALSE(pretrained.empty());
  EXPECT_EQ(at_probe, pretrained);
}

}  // namespace
}  // namespace gppf::train
