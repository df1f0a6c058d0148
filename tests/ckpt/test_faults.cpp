// Checkpoint saving under faults it must come through cleanly: a disk that fills up (ENOSPC injected
// into the writer, and a real tiny tmpfs where mounting one is allowed) and non-finite values. Each
// ends in one line naming the file or the tensor, the previous checkpoint intact and still `latest`,
// no HDF5 handle left open and a process that exits normally (HDF5 1.10 crashed with a segmentation
// fault in its exit-time cleanup after a write had failed inside it).
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <thread>

#include "core/error.hpp"
#include "src/train/async_checkpoint.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/checkpoint_files.hpp"
#include "src/train/trainer.hpp"
#include "tests/common/command.hpp"
#include "tests/common/datasets.hpp"
#include "tests/common/files.hpp"

namespace gppf::train {
namespace {

using test::ckpt;
using test::error_of;
using test::read_text;
using test::write_text;

namespace fs = std::filesystem;

// Two parameters, a BN buffer and a momentum; every value encodes the step that wrote it.
struct State {
  nn::Parameter w, b;
  Tensor mean, momentum;

  explicit State(std::int64_t step, std::int64_t n = 4096) {
    w.name = "layer0.weight";
    w.value = Tensor::empty({n}, DType::F32);
    b.name = "layer0.bias";
    b.value = Tensor::empty({16}, DType::F32);
    mean = Tensor::empty({16}, DType::F32);
    momentum = Tensor::empty({n}, DType::F32);
    fill(step);
  }
  void fill(std::int64_t step) {
    for (Tensor* t : {&w.value, &b.value, &mean, &momentum}) {
      float* d = t->data_as<float>();
      for (std::int64_t i = 0; i < t->numel(); ++i) d[i] = static_cast<float>(step) + 1e-3f * static_cast<float>(i % 7);
    }
  }
  CheckpointTensors view() {
    return {{&w, &b}, {{"layer0.bn.running_mean.task0", &mean}}, {{"layer0.weight.momentum", &momentum}}};
  }
};

CheckpointMeta meta_at(std::int64_t step) {
  CheckpointMeta m;
  m.step = step;
  m.config_yaml = "steps: 100\n";
  m.optimizer_type = "sgd";
  return m;
}

// HDF5 identifiers still open in this process (files, groups, datasets, types, attributes).
std::int64_t open_hdf5_ids() { return static_cast<std::int64_t>(H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL)); }

std::vector<std::string> tmp_files(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().ends_with(".tmp")) out.push_back(e.path().string());
  return out;
}

class Faults : public ::testing::Test {
 protected:
  void SetUp() override {
    m_dir = fs::temp_directory_path() /
            str("gppf-faults-", ::getpid(), "-", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(m_dir);
    fs::create_directories(m_dir);
  }
  void TearDown() override {
    ckpt::inject_write_failure(0, 0);
    if (m_mounted) ::umount2(m_mounted->c_str(), MNT_DETACH);
    fs::remove_all(m_dir);
  }
  // Checks the state a failed save of step `failed` must leave: one line naming the file and the
  // cause, the previous checkpoint `previous` published, verified and `latest`, no leftovers.
  void expect_failed_save(const std::string& msg, const fs::path& run, std::int64_t failed, std::int64_t previous,
                          const std::string& cause = "No space left on device") {
    EXPECT_NE(msg.find("checkpoint " + ckpt(run, failed) + " was not saved"), std::string::npos) << msg;
    EXPECT_NE(msg.find(cause), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(read_text(run / "checkpoints" / "latest"), checkpoint_file_name(previous) + "\n");
    EXPECT_EQ(list_checkpoints(run.string()).front(), ckpt(run, previous));
    EXPECT_EQ(verify_checkpoint(ckpt(run, previous)).step, previous);
    EXPECT_EQ(tmp_files(run / "checkpoints"), std::vector<std::string>{});
    EXPECT_EQ(open_hdf5_ids(), 0);
  }
  fs::path m_dir;
  std::optional<fs::path> m_mounted;
};

TEST_F(Faults, DiskFullKeepsThePreviousCheckpointAsLatest) {
  const fs::path run = m_dir / "run";
  State s(1);
  save_checkpoint(run.string(), 3, meta_at(1), s.view());
  ckpt::inject_write_failure(1, ENOSPC);
  s.fill(2);
  const std::string msg = error_of([&] { save_checkpoint(run.string(), 3, meta_at(2), s.view()); });
  expect_failed_save(msg, run, 2, 1);
  EXPECT_NE(msg.find(ckpt(run, 2) + ".tmp: write failed: No space left on device"), std::string::npos) << msg;
  // Space again: the next save publishes normally.
  ckpt::inject_write_failure(0, 0);
  s.fill(3);
  EXPECT_EQ(save_checkpoint(run.string(), 3, meta_at(3), s.view()), ckpt(run, 3));
  EXPECT_EQ(list_checkpoints(run.string()), (std::vector<std::string>{ckpt(run, 3), ckpt(run, 1)}));
}

// The checkpoint is complete but `latest` cannot be rewritten: `latest` keeps naming the previous one.
TEST_F(Faults, DiskFullWhileRewritingLatestKeepsTheOldLatest) {
  const fs::path run = m_dir / "run";
  State s(1);
  save_checkpoint(run.string(), 3, meta_at(1), s.view());
  ckpt::inject_write_failure(2, ENOSPC);
  const std::string msg = error_of([&] { save_checkpoint(run.string(), 3, meta_at(2), s.view()); });
  EXPECT_NE(msg.find("checkpoint " + ckpt(run, 2) + " was not published"), std::string::npos) << msg;
  EXPECT_NE(msg.find("latest.tmp: write failed: No space left on device"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_EQ(read_text(run / "checkpoints" / "latest"), checkpoint_file_name(1) + "\n");
  EXPECT_EQ(verify_checkpoint(ckpt(run, 2)).step, 2);  // complete, found by --resume auto
  EXPECT_EQ(open_hdf5_ids(), 0);
}

TEST_F(Faults, DiskFullInABackgroundWriteSurfacesInFinish) {
  const fs::path run = m_dir / "run";
  State s(1);
  AsyncCheckpointer async(3);
  async.begin(run.string(), 1, 0, 1, meta_at(1), s.view());
  EXPECT_EQ(async.finish(), ckpt(run, 1));
  ckpt::inject_write_failure(1, ENOSPC);
  async.begin(run.string(), 2, 0, 1, meta_at(2), s.view());
  const std::string msg = error_of([&] { async.finish(); });
  expect_failed_save(msg, run, 2, 1);
}

// A process whose save failed exits normally: HDF5's exit-time cleanup finds nothing half-closed.
TEST_F(Faults, AProcessExitsNormallyAfterAFailedSave) {
  const fs::path run = m_dir / "run";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    State s(1);
    save_checkpoint(run.string(), 3, meta_at(1), s.view());
    ckpt::inject_write_failure(1, ENOSPC);
    const bool sync_failed = !error_of([&] { save_checkpoint(run.string(), 3, meta_at(2), s.view()); }).empty();
    AsyncCheckpointer async(3);
    async.begin(run.string(), 3, 0, 1, meta_at(3), s.view());
    const bool async_failed = !error_of([&] { async.finish(); }).empty();
    std::exit(sync_failed && async_failed ? 0 : 3);  // runs HDF5's atexit cleanup
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(read_text(run / "checkpoints" / "latest"), checkpoint_file_name(1) + "\n");
}

// A real full disk: a tmpfs that holds two checkpoints and not a third. The saves run in a child process
// so that its exit (HDF5's cleanup) is checked too. Needs root (CAP_SYS_ADMIN) to mount.
TEST_F(Faults, RealFullTmpfsEndsInOneLineAndANormalExit) {
  const fs::path mnt = m_dir / "tmpfs";
  fs::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=360k") != 0)
    GTEST_SKIP() << "SKIPPED: cannot mount a tmpfs at " << mnt << " (" << std::strerror(errno)
                 << "); the injected-ENOSPC tests cover the writer";
  m_mounted = mnt;
  const fs::path run = mnt / "run", out = m_dir / "child-error.txt";
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    State s(1, 1 << 14);  // about 140 KB per checkpoint
    std::string msg;
    for (std::int64_t step = 1; step <= 20 && msg.empty(); ++step) {
      s.fill(step);
      msg = error_of([&] { save_checkpoint(run.string(), 2, meta_at(step), s.view()); });
    }
    write_text(out, msg);
    std::exit(msg.empty() ? 3 : 0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "the child died of signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  ASSERT_EQ(WEXITSTATUS(status), 0) << "the disk never filled up";
  const std::string msg = read_text(out);
  const std::int64_t newest = checkpoint_step(list_checkpoints(run.string()).front());
  ASSERT_GE(newest, 1);
  expect_failed_save(msg, run, newest + 1, newest);
}

// Non-finite values are refused whichever group holds them; nothing is written.
TEST_F(Faults, NonFiniteValuesAreNeverWritten) {
  const fs::path run = m_dir / "run";
  State s(1);
  save_checkpoint(run.string(), 3, meta_at(1), s.view());
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct Case {
    Tensor* t;
    float value;
    std::string name;
  };
  for (const Case& c : {Case{&s.w.value, nan, "/params/layer0.weight"}, Case{&s.b.value, -inf, "/params/layer0.bias"},
                        Case{&s.mean, inf, "/buffers/layer0.bn.running_mean.task0"},
                        Case{&s.momentum, nan, "/optimizer/layer0.weight.momentum"}}) {
    SCOPED_TRACE(c.name);
    s.fill(2);
    c.t->data_as<float>()[c.t->numel() - 1] = c.value;
    const std::string msg = error_of([&] { save_checkpoint(run.string(), 3, meta_at(2), s.view()); });
    expect_failed_save(msg, run, 2, 1, c.name + " holds a non-finite value");
    EXPECT_FALSE(fs::exists(ckpt(run, 2)));
    // The plain single-file writer refuses as well and leaves no file.
    const fs::path file = m_dir / "single.h5";
    const std::string single = error_of([&] { write_checkpoint(file.string(), meta_at(2), s.view()); });
    EXPECT_NE(single.find(c.name + " holds a non-finite value"), std::string::npos) << single;
    EXPECT_FALSE(fs::exists(file));
  }
  // And through the background writer.
  AsyncCheckpointer async(3);
  async.begin(run.string(), 2, 0, 1, meta_at(2), s.view());
  expect_failed_save(error_of([&] { async.finish(); }), run, 2, 1, "holds a non-finite value");
}

// ---- `gppf train` end to end: exit status, the one line on stderr, `latest` -------------------

using Command = test::CommandResult;
using test::run_command;

// Lines of `text` containing `what`.
std::vector<std::string> lines_with(const std::string& text, const std::string& what) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    const std::string line = text.substr(at, end - at);
    if (line.find(what) != std::string::npos) out.push_back(line);
    at = end + 1;
  }
  return out;
}

class TrainFaults : public Faults {
 protected:
  void SetUp() override {
    Faults::SetUp();
    test::write_bars((m_dir / "bars").string(), 64, 16, 1);
    m_yaml = m_dir / "train.yaml";
    write_text(m_yaml, str("steps: 6\nlog_every: 1\nthreads: 1\neval_every: 0\ncheckpoint_every: 1\n",
                           "keep_checkpoints: 3\noptimizer: {type: sgd, lr: 0.05}\nmodel:\n  backbone: gppf-mini\n",
                           "  stem_channels: 4\n  stages: [[8, 1, 1], [8, 1, 2]]\n  legos: 2\n  top_k: 1\n",
                           "  neck: {first_stage: 0, channels: 4}\ntasks:\n  - {name: bars, type: classification, ",
                           "dataset: ", (m_dir / "bars").string(), ", batch_size: 8}\n"));
  }
  std::string train(const fs::path& run, const std::string& args) const {
    return str(GPPF_BINARY, " train --config ", m_yaml.string(), " --out ", run.string(), " ", args);
  }
  // The 5th write is step 3's file (each step: its file, then `latest`).
  void expect_step3_refused(const Command& r, const fs::path& run) {
    EXPECT_EQ(r.status, 1) << r.output;
    const auto errors = lines_with(r.output, "error");
    ASSERT_EQ(errors.size(), 1u) << r.output;
    EXPECT_NE(errors[0].find("gppf train: error: checkpoint " + ckpt(run, 3) + " was not saved: " + ckpt(run, 3) +
                             ".tmp: write failed: No space left on device"),
              std::string::npos)
        << errors[0];
    EXPECT_EQ(read_text(run / "checkpoints" / "latest"), checkpoint_file_name(2) + "\n");
    EXPECT_EQ(verify_checkpoint(ckpt(run, 2)).step, 2);
    EXPECT_EQ(tmp_files(run / "checkpoints"), std::vector<std::string>{});
  }
  fs::path m_yaml;
};

TEST_F(TrainFaults, DiskFullEndsTrainingWithOneLineAndStatus1) {
  const fs::path run = m_dir / "run";
  expect_step3_refused(run_command("GPPF_FAULT_ENOSPC=5 " + train(run, "")), run);
}

TEST_F(TrainFaults, DiskFullInABackgroundWriteEndsTrainingWithOneLineAndStatus1) {
  const fs::path run = m_dir / "run";
  expect_step3_refused(run_command("GPPF_FAULT_ENOSPC=5 " + train(run, "--set checkpoint_async=true")), run);
}

// SIGTERM asks for a checkpoint and exit 75; on a full disk that checkpoint fails: status 1, one line.
TEST_F(TrainFaults, DiskFullAtTheSigtermCheckpointGivesStatus1NotACrash) {
  const fs::path run = m_dir / "run";
  ASSERT_EQ(run_command(train(run, "--set steps=2")).status, 0);
  const fs::path log = m_dir / "sigterm.log";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd = "exec " +
                            train(run,
                                  "--resume auto --set steps=1000000 --set checkpoint_every=0 "
                                  "--set checkpoint_async=true --set schedule.type=constant") +
                            " >" + log.string() + " 2>&1";
    ::setenv("GPPF_FAULT_ENOSPC", "1", 1);
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (lines_with(read_text(log), " lr ").size() < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  const std::string out = read_text(log);
  EXPECT_EQ(WEXITSTATUS(status), 1) << out;
  const auto errors = lines_with(out, "error");
  ASSERT_EQ(errors.size(), 1u) << out;
  EXPECT_NE(errors[0].find("No space left on device"), std::string::npos) << errors[0];
  EXPECT_EQ(read_text(run / "checkpoints" / "latest"), checkpoint_file_name(2) + "\n");
  EXPECT_EQ(verify_checkpoint(ckpt(run, 2)).step, 2);
}

}  // namespace
}  // namespace gppf::train
