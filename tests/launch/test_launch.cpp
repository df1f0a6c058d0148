// Launch detection from faked environments: srun tasks, mpirun ranks (also inside a Slurm allocation,
// where the batch shell's SLURM_* leak into every rank), a batch script without srun, no launcher,
// contradicting or malformed values, and the CUDA device choice. The variable sets are the ones a real
// Slurm 22.05 and Open MPI 4.1 set on this machine (tests/slurm/slurm_test.sh runs the real thing).
#include <gtest/gtest.h>

#include <map>

#include "core/error.hpp"
#include "src/dist/launch.hpp"

namespace gppf::dist {
namespace {

using Env = std::map<std::string, std::string>;

EnvLookup fake(const Env& vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// Task `procid` of an srun step of 8 tasks over 2 nodes with 5 and 3 tasks, in job 4242.
Env srun_task(int procid) {
  const int node = procid < 5 ? 0 : 1;
  return {{"SLURM_JOB_ID", "4242"},
          {"SLURM_JOBID", "4242"},
          {"SLURM_STEP_ID", "0"},
          {"SLURM_STEPID", "0"},
          {"SLURM_PROCID", std::to_string(procid)},
          {"SLURM_LOCALID", std::to_string(node == 0 ? procid : procid - 5)},
          {"SLURM_NODEID", std::to_string(node)},
          {"SLURM_NTASKS", "8"},
          {"SLURM_STEP_NUM_TASKS", "8"},
          {"SLURM_NNODES", "2"},
          {"SLURM_STEP_NUM_NODES", "2"},
          {"SLURM_TASKS_PER_NODE", "5,3"},
          {"SLURM_STEP_TASKS_PER_NODE", "5,3"}};
}

// The message of the gppf::Error `f` throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.reason().find('\n'), std::string::npos) << e.reason();
    return e.reason();
  }
  return "";
}

TEST(Launch, NoLauncherIsOneProcess) {
  const LaunchInfo l = detect_launch(fake({{"HOME", "/root"}}));
  EXPECT_EQ(l.launcher, "none");
  EXPECT_EQ(l.rank, 0);
  EXPECT_EQ(l.world_size, 1);
  EXPECT_EQ(l.local_rank, 0);
  EXPECT_EQ(l.local_size, 1);
  EXPECT_EQ(l.nodes, 1);
  EXPECT_EQ(l.job_id, "");
  EXPECT_EQ(l.note, "");
  EXPECT_EQ(l.describe(), "single process: rank 0 of 1, local rank 0 of 1, 1 node");
}

TEST(Launch, SrunTasksOnTwoUnevenNodes) {
  for (int p = 0; p < 8; ++p) {
    Env e = srun_task(p);
    e["SLURM_RESTART_COUNT"] = "2";
    const LaunchInfo l = detect_launch(fake(e));
    EXPECT_EQ(l.launcher, "slurm");
    EXPECT_EQ(l.rank, p);
    EXPECT_EQ(l.world_size, 8);
    EXPECT_EQ(l.local_rank, p < 5 ? p : p - 5);
    EXPECT_EQ(l.local_size, p < 5 ? 5 : 3);
    EXPECT_EQ(l.nodes, 2);
    EXPECT_EQ(l.job_id, "4242");
    EXPECT_EQ(l.restart_count, 2);
  }
  EXPECT_EQ(detect_launch(fake(srun_task(6))).describe(),
            "slurm (slurm job 4242): rank 6 of 8, local rank 1 of 3, 2 nodes");
}

TEST(Launch, StepValuesWinOverTheAllocationsAndCompressedListsExpand) {
  // A 2-task srun step inside a 16-task, 4-node allocation: SLURM_NTASKS/NNODES describe the step in
  // srun's environment too, but the STEP_ variables are the ones that always do.
  const Env e = {{"SLURM_JOB_ID", "7"},
                 {"SLURM_STEP_ID", "3"},
                 {"SLURM_PROCID", "1"},
                 {"SLURM_LOCALID", "1"},
                 {"SLURM_NODEID", "0"},
                 {"SLURM_NTASKS", "16"},
                 {"SLURM_NNODES", "4"},
                 {"SLURM_TASKS_PER_NODE", "4(x4)"},
                 {"SLURM_STEP_NUM_TASKS", "2"},
                 {"SLURM_STEP_NUM_NODES", "1"},
                 {"SLURM_STEP_TASKS_PER_NODE", "2"}};
  const LaunchInfo l = detect_launch(fake(e));
  EXPECT_EQ(l.world_size, 2);
  EXPECT_EQ(l.nodes, 1);
  EXPECT_EQ(l.local_size, 2);
  EXPECT_EQ(parse_tasks_per_node("4(x3),2,1(x2)", "X"), (std::vector<int>{4, 4, 4, 2, 1, 1}));
  EXPECT_EQ(parse_tasks_per_node("8", "X"), (std::vector<int>{8}));
  for (const char* bad : {"", "4(x)", "4(x2", "a", "0", "2,,1", "4(x0)"})
    EXPECT_NE(error_of([&] { parse_tasks_per_node(bad, "SLURM_TASKS_PER_NODE"); }).find("SLURM_TASKS_PER_NODE"),
              std::string::npos)
        << bad;
}

TEST(Launch, OlderSlurmWithoutStepVariables) {
  // Only the classic names: SLURM_NTASKS, SLURM_NNODES, SLURM_TASKS_PER_NODE; one node needs no list.
  const LaunchInfo l = detect_launch(
      fake({{"SLURM_STEPID", "0"}, {"SLURM_PROCID", "3"}, {"SLURM_LOCALID", "3"}, {"SLURM_NTASKS", "4"}}));
  EXPECT_EQ(l.launcher, "slurm");
  EXPECT_EQ(l.rank, 3);
  EXPECT_EQ(l.world_size, 4);
  EXPECT_EQ(l.local_size, 4);
  EXPECT_EQ(l.nodes, 1);
}

TEST(Launch, MpirunRanks) {
  const Env e = {{"OMPI_COMM_WORLD_RANK", "5"},       {"OMPI_COMM_WORLD_SIZE", "8"},
                 {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                 {"OMPI_COMM_WORLD_NODE_RANK", "1"},  {"OMPI_MCA_orte_num_nodes", "2"}};
  const LaunchInfo l = detect_launch(fake(e));
  EXPECT_EQ(l.launcher, "openmpi");
  EXPECT_EQ(l.rank, 5);
  EXPECT_EQ(l.world_size, 8);
  EXPECT_EQ(l.local_rank, 1);
  EXPECT_EQ(l.local_size, 4);
  EXPECT_EQ(l.nodes, 2);
  EXPECT_EQ(l.job_id, "");
  // Without the node count (Open MPI 5): as many nodes as it takes at this node's rank count.
  Env no_nodes = e;
  no_nodes.erase("OMPI_MCA_orte_num_nodes");
  no_nodes["OMPI_COMM_WORLD_LOCAL_SIZE"] = "3";
  EXPECT_EQ(detect_launch(fake(no_nodes)).nodes, 3);
}

// mpirun inside an sbatch script: every rank inherits the batch shell's SLURM_PROCID=0; taking it would
// make all ranks rank 0. Seen on the real Slurm here.
TEST(Launch, MpirunInsideASlurmAllocationTrustsOpenMpi) {
  for (int r = 0; r < 2; ++r) {
    const Env e = {{"SLURM_JOB_ID", "31"},
                   {"SLURM_PROCID", "0"},
                   {"SLURM_LOCALID", "0"},
                   {"SLURM_NTASKS", "2"},
                   {"SLURM_NNODES", "1"},
                   {"SLURM_TASKS_PER_NODE", "2"},
                   {"SLURM_RESTART_COUNT", "1"},
                   {"OMPI_COMM_WORLD_RANK", std::to_string(r)},
                   {"OMPI_COMM_WORLD_SIZE", "2"},
                   {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(r)},
                   {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                   {"OMPI_MCA_orte_num_nodes", "1"}};
    const LaunchInfo l = detect_launch(fake(e));
    EXPECT_EQ(l.launcher, "openmpi");
    EXPECT_EQ(l.rank, r);
    EXPECT_EQ(l.local_rank, r);
    EXPECT_EQ(l.job_id, "31");
    EXPECT_EQ(l.restart_count, 1);
  }
}

TEST(Launch, BatchScriptWithoutSrunIsOneProcessWithANote) {
  const Env e = {{"SLURM_JOB_ID", "99"}, {"SLURM_PROCID", "0"},         {"SLURM_LOCALID", "0"}, {"SLURM_NTASKS", "4"},
                 {"SLURM_NNODES", "1"},  {"SLURM_TASKS_PER_NODE", "4"}, {"SLURM_NPROCS", "4"}};
  const LaunchInfo l = detect_launch(fake(e));
  EXPECT_EQ(l.launcher, "none");
  EXPECT_EQ(l.world_size, 1);
  EXPECT_EQ(l.job_id, "99");
  EXPECT_NE(l.note.find("not started by srun"), std::string::npos) << l.note;
  EXPECT_NE(l.note.find("SLURM_NTASKS=4"), std::string::npos) << l.note;
  // A one-task batch job is fine as it is.
  Env one = e;
  one["SLURM_NTASKS"] = "1";
  EXPECT_EQ(detect_launch(fake(one)).note, "");
}

TEST(Launch, ContradictionsNameTheVariable) {
  struct Case {
    std::string var, value, expect;
  };
  const std::vector<Case> cases = {
      {"SLURM_PROCID", "8", "SLURM_PROCID=8 must be below SLURM_STEP_NUM_TASKS=8"},
      {"SLURM_LOCALID", "5", "SLURM_LOCALID=5 must be below SLURM_STEP_TASKS_PER_NODE"},
      {"SLURM_NODEID", "2", "SLURM_NODEID=2 must be below SLURM_STEP_NUM_NODES=2"},
      {"SLURM_STEP_NUM_NODES", "9", "SLURM_STEP_NUM_NODES=9 must be in [1, SLURM_STEP_NUM_TASKS=8]"},
      {"SLURM_STEP_TASKS_PER_NODE", "5,2", "does not add up to SLURM_STEP_NUM_TASKS=8"},
      {"SLURM_STEP_TASKS_PER_NODE", "4(x3)", "lists 3 nodes but SLURM_STEP_NUM_NODES=2"},
      {"SLURM_STEP_NUM_TASKS", "0", "SLURM_STEP_NUM_TASKS=0"},
      {"SLURM_PROCID", "-1", "SLURM_PROCID='-1' is not a non-negative integer"},
      {"SLURM_PROCID", "2x", "SLURM_PROCID='2x' is not a non-negative integer"},
      {"SLURM_PROCID", "", "SLURM_PROCID='' is not a non-negative integer"},
      {"SLURM_RESTART_COUNT", "one", "SLURM_RESTART_COUNT='one'"},
  };
  for (const Case& c : cases) {
    Env e = srun_task(6);
    e[c.var] = c.value;
    const std::string msg = error_of([&] { detect_launch(fake(e)); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.var << "=" << c.value << ": '" << msg << "'";
  }
  Env missing = srun_task(6);
  missing.erase("SLURM_LOCALID");
  EXPECT_NE(error_of([&] { detect_launch(fake(missing)); }).find("SLURM_LOCALID is not set"), std::string::npos);
  Env multi_no_list = srun_task(6);
  multi_no_list.erase("SLURM_STEP_TASKS_PER_NODE");
  multi_no_list.erase("SLURM_TASKS_PER_NODE");
  EXPECT_NE(error_of([&] { detect_launch(fake(multi_no_list)); }).find("SLURM_STEP_TASKS_PER_NODE is not set"),
            std::string::npos);

  const Env ompi = {{"OMPI_COMM_WORLD_RANK", "2"},
                    {"OMPI_COMM_WORLD_SIZE", "2"},
                    {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                    {"OMPI_COMM_WORLD_LOCAL_SIZE", "1"}};
  EXPECT_NE(
      error_of([&] { detect_launch(fake(ompi)); }).find("OMPI_COMM_WORLD_RANK=2 must be below OMPI_COMM_WORLD_SIZE=2"),
      std::string::npos);
  Env ompi_local = ompi;
  ompi_local["OMPI_COMM_WORLD_RANK"] = "1";
  ompi_local["OMPI_COMM_WORLD_LOCAL_SIZE"] = "3";
  EXPECT_NE(error_of([&] { detect_launch(fake(ompi_local)); }).find("OMPI_COMM_WORLD_LOCAL_SIZE=3 must not exceed"),
            std::string::npos);
  Env ompi_missing = ompi;
  ompi_missing.erase("OMPI_COMM_WORLD_LOCAL_RANK");
  EXPECT_NE(error_of([&] { detect_launch(fake(ompi_missing)); }).find("OMPI_COMM_WORLD_LOCAL_RANK is not set"),
            std::string::npos);
}

TEST(Launch, CudaDeviceIsTheLocalRankModuloVisibleDevices) {
  LaunchInfo l;
  l.local_size = 4;
  for (int r = 0; r < 4; ++r) {
    l.local_rank = r;
    // No CUDA_VISIBLE_DEVICES: all 4 devices of the node, one per rank.
    CudaDeviceChoice c = choose_cuda_device(l, 4, fake({}));
    EXPECT_EQ(c.device, r);
    EXPECT_EQ(c.visible, 4);
    EXPECT_EQ(c.physical, std::to_string(r));
    // Slurm's --gpus-per-task binding: each task sees its own GPU as ordinal 0.
    c = choose_cuda_device(l, 1, fake({{"CUDA_VISIBLE_DEVICES", std::to_string(r)}}));
    EXPECT_EQ(c.device, 0);
    EXPECT_EQ(c.physical, std::to_string(r));
    // Two devices named by UUID for 4 ranks: two ranks per device.
    c = choose_cuda_device(l, 2, fake({{"CUDA_VISIBLE_DEVICES", "GPU-aa,GPU-bb"}}));
    EXPECT_EQ(c.device, r % 2);
    EXPECT_EQ(c.physical, r % 2 ? "GPU-bb" : "GPU-aa");
  }
  l.local_rank = 3;
  // The list limits what the runtime may show; the runtime limits the list (an invalid entry ends it).
  EXPECT_EQ(choose_cuda_device(l, 8, fake({{"CUDA_VISIBLE_DEVICES", "6,7"}})).physical, "7");
  EXPECT_EQ(choose_cuda_device(l, 1, fake({{"CUDA_VISIBLE_DEVICES", "6,99"}})).physical, "6");
  for (const char* none : {"", "-1", "NoDevFiles"}) {
    const CudaDeviceChoice c = choose_cuda_device(l, 4, fake({{"CUDA_VISIBLE_DEVICES", none}}));
    EXPECT_EQ(c.device, -1) << none;
    EXPECT_EQ(c.visible, 0) << none;
  }
  EXPECT_EQ(choose_cuda_device(l, 0, fake({})).device, -1);
}

}  // namespace
}  // namespace gppf::dist
