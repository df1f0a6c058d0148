// GoogleTest under MPI: every rank runs every test; only rank 0 prints the report, and the exit
// status is non-zero when any rank failed a test.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include "src/dist/mpi.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  gppf::dist::MpiEnvironment env(&argc, &argv);
  if (env.rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_failed && env.rank() == 0 && !failed) std::fprintf(stderr, "a test failed on another rank\n");
  return any_failed;
}
