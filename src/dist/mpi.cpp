#include "src/dist/mpi.hpp"

#include <cstdio>
#include <cstdlib>

#include "core/log.hpp"
#include "src/dist/launch.hpp"

namespace gppf::dist {

MpiEnvironment::MpiEnvironment(int* argc, char*** argv) {
  int initialised = 0;
  GPPF_MPI_CHECK(MPI_Initialized(&initialised));
  if (!initialised) {
    int provided = 0;
    GPPF_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    m_owns = true;
  }
  // Errors come back as codes that GPPF_MPI_CHECK turns into exceptions naming the call.
  GPPF_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  GPPF_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &m_rank));
  GPPF_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &m_size));
  if (m_size > 1) set_process_rank(m_rank);

  MPI_Comm node = MPI_COMM_NULL;
  GPPF_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, m_rank, MPI_INFO_NULL, &node));
  GPPF_MPI_CHECK(MPI_Comm_rank(node, &m_local_rank));
  GPPF_MPI_CHECK(MPI_Comm_size(node, &m_local_size));
  MPI_Comm_free(&node);
}

int world_rank_or_zero() {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  if (!initialised || finalised) return 0;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"})
    if (const char* s = std::getenv(v); s && *s) return true;
  return false;
}

std::unique_ptr<MpiEnvironment> start_mpi_for_launch() {
  const LaunchInfo launch = detect_launch();
  if (!launched_by_mpi()) {
    GPPF_CHECK(launch.world_size == 1, "started as rank ", launch.rank, " of ", launch.world_size, " by ",
               launch.launcher,
               " without an MPI process manager, so the ranks cannot find each other: use `srun --mpi=pmix` or mpirun");
    if (!launch.note.empty()) log::warn(launch.note);
    return nullptr;
  }
  auto mpi = std::make_unique<MpiEnvironment>(nullptr, nullptr);
  GPPF_CHECK(launch.launcher == "none" || (mpi->size() == launch.world_size && mpi->rank() == launch.rank), "rank ",
             mpi->rank(), " of ", mpi->size(), " by MPI, but ", launch.rank, " of ", launch.world_size, " by ",
             launch.launcher, "'s environment: check the launcher's --mpi option");
  if (mpi->rank() == 0) {
    log::info(launch.describe());
    if (!launch.note.empty()) log::warn(launch.note);
  }
  return mpi;
}

void abort_all(const std::string& why) {
  std::fprintf(stderr, "gppf: error: %s\n", why.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::_Exit(1);
}

MpiEnvironment::~MpiEnvironment() {
  if (!m_owns) return;
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (!finalised) MPI_Finalize();
}

}  // namespace gppf::dist
