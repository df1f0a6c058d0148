// Crash safety of checkpoint saving, through the public API of src/train/checkpoint.hpp: a process
// SIGKILLed while it writes a checkpoint leaves the previous one loadable and `latest` naming it, and
// the next save clears the remains. Damage that test_checkpoint.cpp does not make (a flipped byte in
// the metadata, a few bytes cut off the end, an empty file, a file that is not HDF5) is refused and
// `--resume auto` falls back past it to the newest complete checkpoint.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.hpp"
#include "src/train/checkpoint.hpp"
#include "tests/common/files.hpp"

namespace gppf::train {
namespace {

using test::ckpt;
using test::error_of;
using test::read_text;
using test::write_text;

namespace fs = std::filesystem;

constexpr int kParams = 16;
constexpr std::int64_t kLarge = std::int64_t(1) << 19;  // 2 MiB per tensor, 32 MiB per checkpoint

// kParams tensors whose values encode the step that wrote them: value i of tensor t is
// step * 1e6 + t * 1000 + i % 1000, so a read-back tells which save it came from.
struct TensorSet {
  std::int64_t floats;
  std::vector<nn::Parameter> params;
  Tensor momentum;

  TensorSet(std::int64_t step, std::int64_t floats_per_tensor) : floats(floats_per_tensor), params(kParams) {
    for (int t = 0; t < kParams; ++t) {
      params[static_cast<std::size_t>(t)].name = str("layer", t, ".weight");
      params[static_cast<std::size_t>(t)].value = Tensor::empty({floats}, DType::F32);
    }
    momentum = Tensor::empty({1000}, DType::F32);
    fill(step);
  }
  void fill(std::int64_t step) {
    for (int t = 0; t < kParams; ++t) {
      float* v = params[static_cast<std::size_t>(t)].value.data_as<float>();
      for (std::int64_t i = 0; i < floats; ++i) v[i] = static_cast<float>(step * 1000000 + t * 1000 + i % 1000);
    }
    float* m = momentum.data_as<float>();
    for (int i = 0; i < 1000; ++i) m[i] = static_cast<float>(step + i);
  }
  // The step whose values every tensor holds, or -1 if they disagree or match no step.
  std::int64_t step() const {
    const float* m = momentum.data_as<float>();
    const auto s = static_cast<std::int64_t>(m[0]);
    for (int i = 0; i < 1000; ++i)
      if (m[i] != static_cast<float>(s + i)) return -1;
    for (int t = 0; t < kParams; ++t) {
      const float* v = params[static_cast<std::size_t>(t)].value.data_as<float>();
      for (std::int64_t i = 0; i < floats; i += 4093)
        if (v[i] != static_cast<float>(s * 1000000 + t * 1000 + i % 1000)) return -1;
    }
    return s;
  }
  CheckpointTensors view() {
    CheckpointTensors c;
    for (auto& p : params) c.params.push_back(&p);
    c.optimizer.emplace_back("layer0.weight.momentum", &momentum);
    return c;
  }
  std::size_t nbytes() const { return kParams * static_cast<std::size_t>(floats) * sizeof(float); }
};

CheckpointMeta meta_at(std::int64_t step) {
  CheckpointMeta m;
  m.step = step;
  m.config_yaml = str("steps: 100\n# written at step ", step, "\n");
  m.optimizer_type = "sgd";
  return m;
}

class Crash : public ::testing::Test {
 protected:
  void SetUp() override {
    m_dir = fs::temp_directory_path() /
            str("gppf-crash-", ::getpid(), "-", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(m_dir);
    fs::create_directories(m_dir);
  }
  void TearDown() override { fs::remove_all(m_dir); }
  fs::path m_dir;
};

// A child saves checkpoints 2, 3, ... of 32 MiB each; the parent SIGKILLs it while a temporary file is
// between an eighth and half of its final size, i.e. surely in the middle of writing tensor data.
// No time stamps in the files: the same state saved a second later gives the same bytes.
TEST_F(Crash, TheSameStateGivesTheSameBytes) {
  TensorSet set(3, 1024);
  save_checkpoint((m_dir / "a").string(), 3, meta_at(3), set.view());
  const std::time_t before = std::time(nullptr);  // HDF5 stamps whole seconds
  while (std::time(nullptr) == before) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  save_checkpoint((m_dir / "b").string(), 3, meta_at(3), set.view());
  EXPECT_TRUE(read_text(ckpt(m_dir / "a", 3)) == read_text(ckpt(m_dir / "b", 3)));
}

TEST_F(Crash, SigkillDuringAWriteLeavesThePreviousCheckpointAndLatest) {
  const fs::path run = m_dir / "run";
  TensorSet first(1, kLarge);
  save_checkpoint(run.string(), 3, meta_at(1), first.view());
  ASSERT_EQ(read_text(run / "checkpoints" / "latest"), checkpoint_file_name(1) + "\n");

  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      TensorSet set(2, kLarge);
      for (std::int64_t step = 2; step <= 60; ++step) {
        set.fill(step);
        save_checkpoint(run.string(), 3, meta_at(step), set.view());
      }
    } catch (...) {
      ::_exit(1);
    }
    ::_exit(0);
  }

  const std::uintmax_t lo = first.nbytes() / 8, hi = first.nbytes() / 2;
  std::string killed_tmp;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (killed_tmp.empty() && std::chrono::steady_clock::now() < deadline) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(run / "checkpoints", ec)) {
      const std::string name = e.path().filename().string();
      if (!name.ends_with(".tmp") || name.starts_with("latest")) continue;
      const std::uintmax_t size = fs::file_size(e.path(), ec);
      if (!ec && size >= lo && size <= hi) {
        ::kill(child, SIGKILL);
        killed_tmp = e.path().string();
        break;
      }
    }
    if (killed_tmp.empty()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (killed_tmp.empty()) ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_FALSE(killed_tmp.empty()) << "never saw a checkpoint half written (status " << status << ")";
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the child ended on its own: " << status;

  // `latest` names the newest published checkpoint, which is complete and holds its own step's values.
  const std::vector<std::string> published = list_checkpoints(run.string());
  ASSERT_FALSE(published.empty());
  const std::string newest = published.front();
  const std::int64_t step = checkpoint_step(newest);
  EXPECT_EQ(read_text(run / "checkpoints" / "latest"), fs::path(newest).filename().string() + "\n");
  EXPECT_EQ(resolve_checkpoint(run.string()), newest);
  EXPECT_EQ(find_resume_checkpoint(run.string()), newest);
  TensorSet back(0, kLarge);
  const CheckpointMeta m = read_checkpoint(newest, back.view(), {});
  EXPECT_EQ(m.step, step);
  EXPECT_TRUE(m.complete);
  EXPECT_EQ(back.step(), step);
  // The interrupted write was the next step's and is nobody's checkpoint.
  EXPECT_TRUE(fs::exists(killed_tmp));
  EXPECT_NE(killed_tmp.find(checkpoint_file_name(step + 1)), std::string::npos) << killed_tmp;
  for (const auto& p : published) EXPECT_FALSE(p.ends_with(".tmp")) << p;
  EXPECT_NE(error_of([&] { verify_checkpoint(killed_tmp); }), "") << "a half-written file verified";

  // The next save (a restarted job) publishes normally and clears the half-written file.
  TensorSet next(step + 1, kLarge);
  const std::string saved = save_checkpoint(run.string(), 3, meta_at(step + 1), next.view());
  EXPECT_EQ(saved, ckpt(run, step + 1));
  EXPECT_FALSE(fs::exists(killed_tmp));
  EXPECT_EQ(find_resume_checkpoint(run.string()), saved);
}

// Kinds of damage on the newest checkpoint, each on its own; --resume auto must fall back to the
// previous complete checkpoint, and reading the damaged one must fail with one line naming it.
TEST_F(Crash, DamagedNewestCheckpointFallsBackToThePreviousOne) {
  const fs::path run = m_dir / "run";
  {
    TensorSet small(0, 4096);
    for (std::int64_t step : {10, 20}) {
      small.fill(step);
      save_checkpoint(run.string(), 5, meta_at(step), small.view());
    }
  }
  const std::string good = read_text(ckpt(run, 20));
  const std::string meta_marker = "# written at step 20";
  ASSERT_NE(good.find(meta_marker), std::string::npos) << "the config text is not stored verbatim";

  struct Damage {
    const char* what;
    std::string bytes;
  };
  std::string flipped_meta = good;
  flipped_meta[good.find(meta_marker) + meta_marker.size() - 1] ^= 0x01;  // "step 20" -> "step 21"
  const std::vector<Damage> damages = {
      {"a flipped byte in the stored config", flipped_meta},
      {"the last 16 bytes cut off", good.substr(0, good.size() - 16)},
      {"an empty file", ""},
      {"not an HDF5 file", std::string(4096, 'x')},
  };
  for (const Damage& d : damages) {
    SCOPED_TRACE(d.what);
    write_text(ckpt(run, 20), d.bytes);
    const std::string msg = error_of([&] {
      TensorSet back(0, 4096);
      read_checkpoint(ckpt(run, 20), back.view(), {});
    });
    EXPECT_NE(msg.find(ckpt(run, 20)), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_NE(error_of([&] { verify_checkpoint(ckpt(run, 20)); }), "");
    EXPECT_EQ(find_resume_checkpoint(run.string()), ckpt(run, 10));
    TensorSet back(0, 4096);
    EXPECT_EQ(read_checkpoint(find_resume_checkpoint(run.string()), back.view(), {}).step, 10);
    EXPECT_EQ(back.step(), 10);
  }
  // Restored, the newest is taken again: the fallback is not sticky.
  write_text(ckpt(run, 20), good);
  EXPECT_EQ(find_resume_checkpoint(run.string()), ckpt(run, 20));
}

}  // namespace
}  // namespace gppf::train
