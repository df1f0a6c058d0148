// `distributed: auto` (src/train/auto_layout.hpp): every layout the world size allows is priced, the
// fastest runnable one is chosen, and what cannot run says why (idle task groups, a batch that does not
// split over the replicas, too little memory); the config keys that ask for it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "src/train/auto_layout.hpp"
#include "src/train/network.hpp"
#include "tests/common/datasets.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;

class AutoLayout : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-auto-" + std::to_string(::getpid()));
    fs::create_directories(s_dir);
    test::write_bars((s_dir / "bars").string(), 64, 16, 1);
    test::write_squares((s_dir / "squares").string(), 32, 8, 2);
  }
  static void TearDownTestSuite() { fs::remove_all(s_dir); }
  static TrainConfig config(const std::vector<std::string>& sets = {}, const std::string& distributed = "auto") {
    const std::string yaml =
        str("steps: 2\nmodel: {backbone: gppf-mini, stem_channels: 4, stages: [[8, 1, 1], [8, 1, 2]],"
            " legos: 4, top_k: 1, neck: {first_stage: 0, channels: 8}}\ndistributed: ",
            distributed, "\n", test::tiny_tasks_yaml(s_dir.string()));
    return parse_config(yaml, sets, "auto.yaml");
  }
  static fs::path s_dir;
};
fs::path AutoLayout::s_dir;

// gppf-vit: layouts with expert parallelism are listed as refused with the reason; the choice has one
// copy of the MLP legos per rank, and its gradient traffic counts the MLP legos.
// gppf-vit's MLP legos shard like the residual ones: expert-parallel layouts price the normalised
// tokens they move and hold a share of the legos.
TEST_F(AutoLayout, VitPricesItsMlpLegoShards) {
  const TrainConfig c = config({"model.backbone=gppf-vit", "model.stages=[]", "model.vit.patch=4", "model.vit.dim=8",
                                "model.vit.depth=1", "model.vit.heads=2"});
  Network net(c, open_tasks(c).specs);
  const AutoPlan plan = plan_auto_layout(c, net, 4, 4, auto_link_model(c));
  int sharded = 0;
  double memory_one_copy = 0;
  for (const LayoutChoice& l : plan.choices)
    if (l.expert_parallel == 1 && l.task_groups == 4) memory_one_copy = l.memory_bytes;
  ASSERT_GT(memory_one_copy, 0.0);
  for (const LayoutChoice& l : plan.choices)
    if (l.expert_parallel > 1) {
      EXPECT_TRUE(l.refused.empty()) << l.refused;
      EXPECT_GT(l.alltoall_bytes, 0.0);
      if (l.task_groups == 4) {
        EXPECT_LT(l.memory_bytes, memory_one_copy);
      }
      ++sharded;
    }
  EXPECT_EQ(sharded, 3);
  EXPECT_GT(plan.best().grad_wire_bytes, 0.0);
}

TEST_F(AutoLayout, PricesEveryLayoutAndPicksTheFastestThatRuns) {
  const TrainConfig c = config();
  ASSERT_TRUE(c.distributed.auto_layout);
  Network net(c, open_tasks(c).specs);
  const LinkModel links = auto_link_model(c);
  const AutoPlan plan = plan_auto_layout(c, net, 4, 2, links);
  // 4 ranks: (replicas, groups) in (1,4) (2,2) (4,1), experts dividing the groups up to the 4 legos.
  EXPECT_EQ(plan.choices.size(), 6u);
  ASSERT_EQ(plan.chosen, 0);
  const LayoutChoice& best = plan.best();
  EXPECT_TRUE(best.refused.empty());
  for (const LayoutChoice& other : plan.choices) {
    if (other.refused.empty()) {
      EXPECT_LE(best.step_ms, other.step_ms);
    }
  }
  EXPECT_GT(best.compute_ms, 0.0);
  EXPECT_NEAR(best.step_ms, best.compute_ms + best.alltoall_ms + best.grad_ms, 1e-9);
  // Expert-parallel layouts move activations; one copy of the legos per rank moves none.
  for (const LayoutChoice& l : plan.choices) EXPECT_EQ(l.alltoall_bytes > 0, l.expert_parallel > 1);
  const std::string table = plan.table(4, 2, links);
  EXPECT_NE(table.find("->"), std::string::npos) << table;
  EXPECT_NE(table.find("distributed: auto, 4 ranks"), std::string::npos) << table;
}

TEST_F(AutoLayout, SaysWhyALayoutCannotRun) {
  const TrainConfig c = config();
  Network net(c, open_tasks(c).specs);
  // 3 ranks, 3 tasks of batch 16, 8, 8: 3 replicas leave 16/3 images; 3 groups of one task each run.
  const AutoPlan plan = plan_auto_layout(c, net, 3, 3, auto_link_model(c));
  bool batch_refused = false;
  for (const LayoutChoice& l : plan.choices)
    batch_refused |= l.replicas == 3 && l.refused.find("batch_size") != std::string::npos;
  EXPECT_TRUE(batch_refused);
  EXPECT_EQ(plan.best().task_groups, 3);
  // 8 ranks of task parallelism leave groups without a task.
  const AutoPlan wide = plan_auto_layout(c, net, 8, 8, auto_link_model(c));
  bool idle_refused = false;
  for (const LayoutChoice& l : wide.choices)
    idle_refused |= l.replicas == 1 && l.expert_parallel == 1 && l.refused.find("run no task") != std::string::npos;
  EXPECT_TRUE(idle_refused);
  // No memory: nothing runs, and the error names the reason.
  LinkModel tiny = auto_link_model(c);
  tiny.memory_bytes = 1000;
  try {
    (void)plan_auto_layout(c, net, 2, 2, tiny);
    ADD_FAILURE() << "a plan with 1000 bytes of memory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("GB per rank"), std::string::npos) << e.what();
  }
}

TEST_F(AutoLayout, ConfigKeys) {
  EXPECT_TRUE(config().distributed.auto_layout);
  EXPECT_FALSE(config({}, "{task_groups: 2}").distributed.auto_layout);
  EXPECT_TRUE(config({}, "{layout: auto, bucket_mb: 8}").distributed.auto_layout);
  for (const char* bad : {"{layout: auto, replicas: 2}", "fast", "{layout: best}"})
    EXPECT_THROW(config({}, bad), Error) << bad;
  try {
    config({}, "{layout: auto, replicas: 2}");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'distributed.replicas' is chosen by layout: auto"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace gppf::train
