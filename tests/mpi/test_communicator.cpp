// The communicator conformance suite (src/dist/communicator.hpp): the same tests for every
// implementation, under mpirun -np 1, 2 and 4. MPI always; NCCL where the build has CUDA and every
// rank of the node has a GPU of its own (one GPU hosts one NCCL rank), else skipped saying so.
// Several GPUs: docs/SCALING.md, "multi-GPU tests".
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "core/cuda_runtime.hpp"
#include "core/tensor.hpp"
#include "gppf/build_info.hpp"
#include "src/dist/communicator.hpp"
#include "src/dist/launch.hpp"

namespace gppf::dist {
namespace {

// The implementation under test, on MPI_COMM_WORLD; null (with why) where it cannot run here.
std::unique_ptr<Communicator> make(const std::string& kind, std::string* why) {
  if (kind == "mpi") return make_mpi_communicator(Comm(MPI_COMM_WORLD, "world", 60));
  if (!build::kCuda) {
    *why = "NCCL: built without CUDA";
    return nullptr;
  }
  const LaunchInfo launch = detect_launch();
  const CudaDeviceChoice choice = choose_cuda_device(launch, cuda::device_count());
  int enough = choice.device >= 0 && choice.visible >= launch.local_size ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &enough, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!enough) {
    *why = "NCCL: needs a GPU per rank of the node";
    return nullptr;
  }
  static Comm world(MPI_COMM_WORLD, "world (NCCL id)", 60);
  return make_nccl_communicator(world, choice.device, "world (NCCL)");
}

// Floats on the communicator's device.
Tensor buffer(const Communicator& c, const std::vector<float>& values) {
  Tensor h = Tensor::empty({static_cast<std::int64_t>(values.size())}, DType::F32);
  std::copy(values.begin(), values.end(), h.data_as<float>());
  return c.device().is_host() ? h : h.to(c.device());
}
std::vector<float> values(const Tensor& t) { return t.to(Device::host()).to_float_vector(); }

class Conformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    m_comm = make(GetParam(), &why);
    if (!m_comm) GTEST_SKIP() << why;
  }
  std::unique_ptr<Communicator> m_comm;
};

TEST_P(Conformance, SumsInBucketsStartedTogether) {
  Communicator& c = *m_comm;
  const int n = c.size(), r = c.rank();
  std::vector<Tensor> buckets;
  for (int len : {5, 0, 1000}) {
    std::vector<float> v(static_cast<std::size_t>(len));
    for (int i = 0; i < len; ++i) v[static_cast<std::size_t>(i)] = static_cast<float>((r + 1) * (i % 7));
    buckets.push_back(buffer(c, v));
  }
  for (auto& b : buckets) c.start_allreduce_sum(b.data_as<float>(), b.numel(), "a bucket");
  c.wait_all("the buckets");
  const float members = static_cast<float>(n * (n + 1) / 2);  // sum of (r + 1)
  for (const auto& b : buckets) {
    const auto got = values(b);
    for (std::size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], members * static_cast<float>(i % 7)) << i;
  }
}

// Member r sends (r + d) % 3 floats to d, some of them none; each value says who sent it to whom.
TEST_P(Conformance, AllToAllMovesExactCounts) {
  Communicator& c = *m_comm;
  const int n = c.size(), r = c.rank();
  std::vector<std::int64_t> send_counts, recv_counts;
  std::vector<float> send;
  for (int d = 0; d < n; ++d) {
    send_counts.push_back((r + d) % 3);
    recv_counts.push_back((d + r) % 3);
    for (int i = 0; i < (r + d) % 3; ++i) send.push_back(static_cast<float>(r * 100 + d * 10 + i));
  }
  std::int64_t total = 0;
  for (auto k : recv_counts) total += k;
  Tensor s = buffer(c, send.empty() ? std::vector<float>{0.0f} : send);
  Tensor out = buffer(c, std::vector<float>(static_cast<std::size_t>(std::max<std::int64_t>(total, 1)), -1.0f));
  c.alltoallv(s.data_as<float>(), send_counts, out.data_as<float>(), recv_counts, "the exchange");
  const auto got = values(out);
  std::size_t at = 0;
  for (int src = 0; src < n; ++src)
    for (int i = 0; i < recv_counts[static_cast<std::size_t>(src)]; ++i)
      EXPECT_EQ(got[at++], static_cast<float>(src * 100 + r * 10 + i)) << "from " << src;
}

TEST_P(Conformance, BroadcastsFromEveryRoot) {
  Communicator& c = *m_comm;
  for (int root = 0; root < c.size(); ++root) {
    std::vector<float> v(17, 0.0f);
    if (c.rank() == root)
      for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(root * 1000 + i);
    Tensor b = buffer(c, v);
    c.broadcast(b.data_as<float>(), b.numel(), root, "a broadcast");
    const auto got = values(b);
    for (std::size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], static_cast<float>(root * 1000 + i));
  }
  c.barrier("the end of the broadcasts");
}

// Even and odd ranks, each group ordered by descending rank: sums stay inside a group, and the same
// split again is the same communicator.
TEST_P(Conformance, SplitsIntoOrderedCachedGroups) {
  Communicator& c = *m_comm;
  const int n = c.size(), r = c.rank();
  const auto group = c.split(r % 2, -r, "parity");
  EXPECT_EQ(group.get(), c.split(r % 2, -r, "parity").get());
  const int members = (n - r % 2 + 1) / 2;
  ASSERT_EQ(group->size(), members);
  int above = 0;  // same parity, higher rank: ordered first
  for (int q = r + 2; q < n; q += 2) ++above;
  EXPECT_EQ(group->rank(), above);
  Tensor b = buffer(*group, {static_cast<float>(r)});
  group->allreduce_sum(b.data_as<float>(), 1, "a group sum");
  float want = 0;
  for (int q = r % 2; q < n; q += 2) want += static_cast<float>(q);
  EXPECT_EQ(values(b)[0], want);
}

TEST_P(Conformance, CountsForTheWrongMembersNameTheCommunicator) {
  Communicator& c = *m_comm;
  const std::vector<std::int64_t> wrong(static_cast<std::size_t>(c.size() + 1), 0);
  try {
    c.alltoallv(nullptr, wrong, nullptr, wrong, "a bad exchange");
    FAIL() << "counts for " << wrong.size() << " members were taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(c.name()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("a bad exchange"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Communicator, Conformance, ::testing::Values("mpi", "nccl"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
}  // namespace gppf::dist
