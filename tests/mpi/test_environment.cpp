#include <gtest/gtest.h>
#include <mpi.h>

#include <string>
#include <vector>

#include "core/error.hpp"
#include "src/dist/comm.hpp"
#include "src/dist/mpi.hpp"

namespace {

TEST(Mpi, RanksAgreeOnTheWorld) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int sum = 0;
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  EXPECT_EQ(sum, size * (size - 1) / 2);
  if (size > 1) {
    EXPECT_EQ(gppf::process_rank(), rank);
  }
}

TEST(Mpi, AlltoallvMovesExactCounts) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // Rank r sends (r + d + 1) values to rank d, each equal to 100 * r + d.
  std::vector<int> send_counts(size), send_displs(size), recv_counts(size), recv_displs(size);
  int total_send = 0, total_recv = 0;
  for (int d = 0; d < size; ++d) {
    send_counts[d] = rank + d + 1;
    send_displs[d] = total_send;
    total_send += send_counts[d];
    recv_counts[d] = d + rank + 1;
    recv_displs[d] = total_recv;
    total_recv += recv_counts[d];
  }
  std::vector<float> send(total_send), recv(total_recv, -1.0f);
  for (int d = 0; d < size; ++d)
    for (int i = 0; i < send_counts[d]; ++i) send[send_displs[d] + i] = static_cast<float>(100 * rank + d);
  GPPF_MPI_CHECK(MPI_Alltoallv(send.data(), send_counts.data(), send_displs.data(), MPI_FLOAT, recv.data(),
                               recv_counts.data(), recv_displs.data(), MPI_FLOAT, MPI_COMM_WORLD));
  for (int s = 0; s < size; ++s)
    for (int i = 0; i < recv_counts[s]; ++i) EXPECT_EQ(recv[recv_displs[s] + i], static_cast<float>(100 * s + rank));
}

TEST(Mpi, ErrorsCarryTheRank) {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  try {
    GPPF_THROW("boom");
  } catch (const gppf::Error& e) {
    if (size > 1)
      EXPECT_EQ(std::string(e.what()).rfind("[rank ", 0), 0u) << e.what();
    else
      EXPECT_EQ(std::string(e.what()).rfind("boom", 0), 0u) << e.what();
  }
}

// The last rank stays away from a barrier: the others' watchdog names it, and only it.
TEST(Mpi, TheWatchdogNamesOnlyTheRanksThatDidNotArrive) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size < 2) GTEST_SKIP() << "needs 2 ranks";
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  gppf::dist::Comm comm(dup, "test", 0.5);
  gppf::dist::Comm::set_watchdog_action([](const std::string& m) { GPPF_THROW(m); });
  const int late = size - 1;
  if (rank != late) {
    std::string message;
    try {
      comm.barrier("the test barrier");
    } catch (const gppf::Error& e) {
      message = e.reason();
    }
    EXPECT_NE(message.find("watchdog: the test barrier (collective 1) on communicator 'test'"), std::string::npos)
        << message;
    EXPECT_NE(message.find(gppf::str("world rank ", late, " did not arrive and did not answer")), std::string::npos)
        << message;
    EXPECT_EQ(message.find("world rank 0 "), std::string::npos) << message;
    MPI_Barrier(MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);  // progresses the abandoned barrier while the late rank joins it
  } else {
    MPI_Barrier(MPI_COMM_WORLD);
    comm.barrier("the late rank's barrier");
    MPI_Barrier(MPI_COMM_WORLD);
  }
  gppf::dist::Comm::set_watchdog_action(nullptr);
}

}  // namespace
