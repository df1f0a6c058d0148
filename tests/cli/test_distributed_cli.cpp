// `gppf train` under mpirun: a rank that dies or stops responding ends the whole job with a message
// naming it (no hang), and a checkpoint written by 2 ranks resumes on 4 and the other way round.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.hpp"
#include "tests/common/checkpoint_compare.hpp"
#include "tests/common/command.hpp"
#include "tests/common/datasets.hpp"

namespace gppf {
namespace {

namespace fs = std::filesystem;

struct Result {
  int status = -1;
  std::string output;
  double seconds = 0;
};

Result sh(const std::string& cmd) {
  Result r;
  const auto t0 = std::chrono::steady_clock::now();
  const test::CommandResult c = test::run_command(cmd);
  r.status = c.status;
  r.output = c.output;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

class DistributedCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_dir = fs::temp_directory_path() / ("gppf-dist-cli-" + std::to_string(::getpid()));
    fs::create_directories(s_dir);
    test::write_bars((s_dir / "bars").string(), 128, 16, 1);
    test::write_squares((s_dir / "squares").string(), 64, 8, 2);
    std::ofstream(s_dir / "c.yaml") << str(R"(
steps: 4
log_every: 2
threads: 1
bn_calibration_batches: 1
checkpoint_every: 2
keep_checkpoints: 5
optimizer: {type: sgd, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4}
schedule: {type: constant}
model:
  backbone: gppf-mini
  stem_channels: 4
  stages: [[8, 1, 1], [8, 1, 2]]
  legos: 4
  top_k: 2
  routing: {warmup: none}
  neck: {first_stage: 0, channels: 8}
tasks:
  - {name: bars, type: classification, dataset: )",
                                           (s_dir / "bars").string(), R"(, batch_size: 8}
  - {name: bars2, type: classification, dataset: )",
                                           (s_dir / "bars").string(), R"(, batch_size: 4}
  - {name: det, type: detection, dataset: )",
                                           (s_dir / "squares").string(), R"(, batch_size: 4}
  - {name: seg, type: segmentation, dataset: )",
                                           (s_dir / "squares").string(), R"(, batch_size: 4}
)");
  }
  static void TearDownTestSuite() {
    if (!std::getenv("GPPF_KEEP")) fs::remove_all(s_dir);
  }

  static std::string mpirun(int np, const std::string& env, const std::string& args) {
    return str(env, " timeout 240 ", GPPF_MPIEXEC, " -np ", np, " --oversubscribe --allow-run-as-root ", GPPF_BINARY,
               " train --config ", (s_dir / "c.yaml").string(), " ", args);
  }
  static fs::path s_dir;
};
fs::path DistributedCli::s_dir;

TEST_F(DistributedCli, ARankThatDiesEndsTheJobNamingIt) {
  const Result r =
      sh(mpirun(2, "GPPF_FAULT=die:1:3", "--out " + (s_dir / "die").string() + " --set distributed.expert_parallel=2"));
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.status, 124) << "the job hung until timeout killed it:\n" << r.output;
  EXPECT_NE(r.output.find("rank 1"), std::string::npos) << r.output;
  EXPECT_LT(r.seconds, 120);
}

TEST_F(DistributedCli, AStuckRankTripsTheWatchdogOfTheOthers) {
  const Result r = sh(mpirun(2, "GPPF_FAULT=stall:1:3",
                             "--out " + (s_dir / "stall").string() +
                                 " --set distributed.expert_parallel=2"
                                 " --set distributed.watchdog_seconds=3"));
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.status, 124) << "the job hung until timeout killed it:\n" << r.output;
  EXPECT_NE(r.output.find("rank 0: watchdog:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("world rank 1 did not arrive"), std::string::npos) << r.output;
}

TEST_F(DistributedCli, AnImpossibleLayoutIsOneLineNamingTheKey) {
  const Result r = sh(mpirun(2, "", "--out " + (s_dir / "bad").string() + " --set distributed.expert_parallel=3"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("distributed.expert_parallel"), std::string::npos) << r.output;
}

TEST_F(DistributedCli, CheckpointsReshardBetweenTwoAndFourRanks) {
  const std::string straight = (s_dir / "straight").string(), up = (s_dir / "up").string(),
                    down = (s_dir / "down").string(), four = (s_dir / "four").string();
  const std::string ep2 = " --set distributed.expert_parallel=2";
  ASSERT_EQ(sh(mpirun(2, "", "--out " + straight + ep2)).status, 0);
  ASSERT_EQ(sh(mpirun(4, "", "--out " + four + " --set distributed.expert_parallel=4")).status, 0);
  // 2 ranks -> 4 ranks (another layout), and 4 -> 2, from step 2 to 4. (Sums run in another order on
  // another layout: differences of 1e-7 grow with every step, so the comparison is kept short.)
  const Result a = sh(mpirun(4, "",
                             "--out " + up + " --resume " + straight + "/checkpoints/step-00000002.h5" +
                                 " --set distributed.task_groups=2 --set distributed.replicas=2" + ep2));
  ASSERT_EQ(a.status, 0) << a.output;
  const Result b = sh(mpirun(2, "", "--out " + down + " --resume " + four + "/checkpoints/step-00000002.h5" + ep2));
  ASSERT_EQ(b.status, 0) << b.output;
  for (const auto& run : {up, down}) {
    const test::ParamComparison c = test::compare_checkpoint_params(run + "/checkpoints/step-00000004.h5",
                                                                    straight + "/checkpoints/step-00000004.h5");
    EXPECT_TRUE(c.missing.empty()) << run;
    EXPECT_GT(c.tensors, 50);
    EXPECT_LT(c.global_relative, 1e-5) << run;
    EXPECT_LT(c.max_relative, 1e-4) << run << ": " << c.worst;
    std::printf("%s: relative error %.2e (all parameters), %.2e (worst tensor, %s) against the 2-rank run\n",
                run.c_str(), c.global_relative, c.max_relative, c.worst.c_str());
  }
}

TEST_F(DistributedCli, BenchCommReportsBytesAndTheScalingModel) {
  const Result r = sh(str(GPPF_BINARY, " bench comm --json --config ", (s_dir / "c.yaml").string()));
  ASSERT_EQ(r.status, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  bool sharded = false;
  for (const auto& l : j["layouts"])
    if (l["layout"] == "expert+task parallel" && l["world"] == 4) {
      sharded = true;
      // Legos held once per replica: only replicated parameters are all-reduced.
      EXPECT_GT(l["naive_over_ours"].get<double>(), 4.0) << l.dump();
      EXPECT_GT(l["alltoall_bytes"].get<double>(), 0.0);
    }
  EXPECT_TRUE(sharded);
  bool weak512 = false;
  for (const auto& s : j["r50"]["scaling"])
    if (s["mode"] == "weak" && s["gpus"] == 512 && s["expert_parallel"] == 1) {
      weak512 = true;
      EXPECT_GT(s["efficiency_no_overlap"].get<double>(), 0.9) << s.dump();
      EXPECT_LE(s["efficiency_overlap"].get<double>(), 1.0);
    }
  EXPECT_TRUE(weak512);
}

}  // namespace
}  // namespace gppf
