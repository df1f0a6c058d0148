#pragma once
// The process group as launched by mpirun, srun or nothing at all (a single process).
#include <mpi.h>

#include <memory>
#include <string>

#include "core/error.hpp"

#define GPPF_MPI_CHECK(call)                                             \
  do {                                                                   \
    const int gppf_err_ = (call);                                        \
    if (gppf_err_ != MPI_SUCCESS) [[unlikely]] {                         \
      char gppf_msg_[MPI_MAX_ERROR_STRING];                              \
      int gppf_len_ = 0;                                                 \
      MPI_Error_string(gppf_err_, gppf_msg_, &gppf_len_);                \
      GPPF_THROW(#call, " failed: ", std::string(gppf_msg_, gppf_len_)); \
    }                                                                    \
  } while (0)

namespace gppf::dist {

// Initialises MPI once per process (thread level FUNNELED: only the main thread calls MPI) and
// finalises it on destruction if it initialised it. Sets the rank used in error messages and logs.
class MpiEnvironment {
 public:
  MpiEnvironment(int* argc, char*** argv);
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  int rank() const { return m_rank; }
  int size() const { return m_size; }
  // The rank within this node, from a shared-memory split of MPI_COMM_WORLD (works under mpirun,
  // srun and a plain launch alike).
  int local_rank() const { return m_local_rank; }
  int local_size() const { return m_local_size; }

 private:
  bool m_owns = false;
  int m_rank = 0;
  int m_size = 1;
  int m_local_rank = 0;
  int m_local_size = 1;
};

// True when this process was started by an MPI launcher (mpirun/mpiexec, or srun with PMI/PMIx), so
// that MPI_Init will find its peers. A plain `gppf train` does not initialise MPI at all.
bool launched_by_mpi();

// For commands that run on every rank (train, bench comm): MPI when a launcher started this process,
// checked against what the launcher's environment says (src/dist/launch.hpp); null for a plain run.
// Throws one line when the launcher started several tasks that cannot find each other (`srun`
// without `--mpi=pmix`) or MPI disagrees with the launcher about rank or size.
std::unique_ptr<MpiEnvironment> start_mpi_for_launch();

// This process's rank in MPI_COMM_WORLD, 0 when MPI is not initialised (a plain run).
int world_rank_or_zero();

// Prints "gppf: error: <why>" and aborts every rank of the job (MPI_Abort), so that no rank waits for
// this one in a collective.
[[noreturn]] void abort_all(const std::string& why);

}  // namespace gppf::dist
