#pragma once
// Where this process sits in a launched job, read from the launcher's environment before MPI starts:
// rank, world size, rank and size within the node, node count, Slurm job id, and the CUDA device to
// use. MpiEnvironment checks it against MPI's own view. docs: jobs/README.md.
//
// Which variables are trusted (checked on a real Slurm 22.05 with Open MPI 4.1):
// - mpirun/mpiexec sets OMPI_COMM_WORLD_* for each process it starts. Inside a Slurm allocation those
//   processes also inherit the batch shell's SLURM_PROCID=0 and SLURM_NTASKS, which describe mpirun,
//   not them, so OMPI_COMM_WORLD_* win whenever they are present.
// - srun sets SLURM_STEP_ID, SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_LOCALID, SLURM_NODEID and
//   SLURM_STEP_TASKS_PER_NODE for each task of the step.
// - The batch script itself has SLURM_JOB_ID, SLURM_PROCID=0 and the allocation's SLURM_NTASKS but no
//   SLURM_STEP_ID: a process started there without srun is one process of its own ("none").
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace gppf::dist {

// One environment variable by name; nullopt when unset. Tests pass a fake environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The real environment (getenv).
EnvLookup process_environment();

struct LaunchInfo {
  std::string launcher = "none";  // "slurm" (srun), "openmpi" (mpirun/mpiexec) or "none"
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // rank among the processes of this node
  int local_size = 1;
  int nodes = 1;
  std::string job_id;     // SLURM_JOB_ID (also under mpirun inside an allocation); "" outside Slurm
  int restart_count = 0;  // SLURM_RESTART_COUNT: how often Slurm has requeued this job
  std::string note;       // a warning worth logging once (e.g. "in a Slurm job but not started by srun")

  // "slurm job 1234: rank 3 of 8, local 1 of 4, 2 nodes" and the like, for the log.
  std::string describe() const;
};

// Reads the launch from `env`. Throws gppf::Error naming the variable for a value that is not a
// number or contradicts another (SLURM_PROCID >= SLURM_STEP_NUM_TASKS, ...).
LaunchInfo detect_launch(const EnvLookup& env = process_environment());

struct CudaDeviceChoice {
  int device = -1;       // ordinal for cudaSetDevice (the runtime numbers visible devices 0..n-1); -1: none
  int visible = 0;       // devices this process can see
  std::string physical;  // what that ordinal is in CUDA_VISIBLE_DEVICES (index or UUID); the ordinal if unset
};

// The device of this process: local rank modulo the visible devices. `runtime_device_count` is what
// cudaGetDeviceCount reports (0 without a GPU or a CUDA build). CUDA_VISIBLE_DEVICES empty, "-1" or
// "NoDevFiles" (Slurm's "no GPU for this task") means no device whatever the runtime says; when Slurm
// binds one GPU per task each process sees one device and takes ordinal 0. Whether ranks share a
// device can only be told across ranks: compare `physical` within the node.
CudaDeviceChoice choose_cuda_device(const LaunchInfo& launch, int runtime_device_count,
                                    const EnvLookup& env = process_environment());

// Tasks per node in Slurm's compressed form ("4(x2),3") expanded: {4, 4, 3}. Throws naming `variable`.
std::vector<int> parse_tasks_per_node(const std::string& value, const std::string& variable);

}  // namespace gppf::dist
