#include "src/dist/mpi.hpp"

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

MpiEnvironment::~MpiEnvironment() {
  if (!m_owns) return;
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (!finalised) MPI_Finalize();
}

}  // namespace gppf::dist
