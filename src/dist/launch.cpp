#include "src/dist/launch.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <numeric>

#include "core/error.hpp"

namespace gppf::dist {
namespace {

// A whole-string non-negative decimal number, else an error naming the variable.
int parse_count(const std::string& value, const std::string& variable) {
  int v = -1;
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, v);
  GPPF_CHECK(ec == std::errc() && ptr == end && v >= 0 && !value.empty(), "launch: ", variable, "='", value,
             "' is not a non-negative integer; unset it or fix the job script");
  return v;
}

std::optional<int> optional_count(const EnvLookup& env, const std::string& variable) {
  const auto v = env(variable);
  if (!v) return std::nullopt;
  return parse_count(*v, variable);
}

int required_count(const EnvLookup& env, const std::string& variable, const char* who) {
  const auto v = optional_count(env, variable);
  GPPF_CHECK(v.has_value(), "launch: ", variable, " is not set although ", who,
             " sets it for every process; is the environment cleared before gppf starts?");
  return *v;
}

// The first of `variables` that is set, with its name; nullopt when none is.
std::optional<std::pair<std::string, int>> first_count(const EnvLookup& env,
                                                       const std::vector<std::string>& variables) {
  for (const auto& name : variables)
    if (const auto v = optional_count(env, name)) return std::make_pair(name, *v);
  return std::nullopt;
}

void check_below(int value, const std::string& name, int bound, const std::string& bound_name) {
  GPPF_CHECK(value < bound, "launch: ", name, "=", value, " must be below ", bound_name, "=", bound,
             "; the launcher's variables contradict each other (set by hand or left over from another job?)");
}

LaunchInfo from_openmpi(const EnvLookup& env) {
  LaunchInfo l;
  l.launcher = "openmpi";
  l.rank = required_count(env, "OMPI_COMM_WORLD_RANK", "mpirun");
  l.world_size = required_count(env, "OMPI_COMM_WORLD_SIZE", "mpirun");
  l.local_rank = required_count(env, "OMPI_COMM_WORLD_LOCAL_RANK", "mpirun");
  l.local_size = required_count(env, "OMPI_COMM_WORLD_LOCAL_SIZE", "mpirun");
  check_below(l.rank, "OMPI_COMM_WORLD_RANK", l.world_size, "OMPI_COMM_WORLD_SIZE");
  check_below(l.local_rank, "OMPI_COMM_WORLD_LOCAL_RANK", l.local_size, "OMPI_COMM_WORLD_LOCAL_SIZE");
  GPPF_CHECK(l.local_size <= l.world_size, "launch: OMPI_COMM_WORLD_LOCAL_SIZE=", l.local_size,
             " must not exceed OMPI_COMM_WORLD_SIZE=", l.world_size);
  // Open MPI 4 exports the node count as an MCA variable; without it, the count if every node holds
  // as many ranks as this one.
  if (const auto n = optional_count(env, "OMPI_MCA_orte_num_nodes")) {
    GPPF_CHECK(*n >= 1 && *n <= l.world_size, "launch: OMPI_MCA_orte_num_nodes=", *n, " must be in [1, ",
               "OMPI_COMM_WORLD_SIZE=", l.world_size, "]");
    l.nodes = *n;
  } else {
    l.nodes = (l.world_size + l.local_size - 1) / l.local_size;
  }
  return l;
}

LaunchInfo from_slurm_step(const EnvLookup& env) {
  LaunchInfo l;
  l.launcher = "slurm";
  l.rank = required_count(env, "SLURM_PROCID", "srun");
  const auto world = first_count(env, {"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"});
  GPPF_CHECK(world, "launch: neither SLURM_STEP_NUM_TASKS nor SLURM_NTASKS is set in a Slurm job step");
  const std::string& world_name = world->first;
  l.world_size = world->second;
  GPPF_CHECK(l.world_size >= 1, "launch: ", world_name, "=0; a job step has at least one task");
  check_below(l.rank, "SLURM_PROCID", l.world_size, world_name);
  l.local_rank = required_count(env, "SLURM_LOCALID", "srun");

  const auto nodes = first_count(env, {"SLURM_STEP_NUM_NODES", "SLURM_NNODES"});
  const std::string nodes_name = nodes ? nodes->first : "SLURM_STEP_NUM_NODES";
  l.nodes = nodes ? nodes->second : 1;
  GPPF_CHECK(l.nodes >= 1 && l.nodes <= l.world_size, "launch: ", nodes_name, "=", l.nodes, " must be in [1, ",
             world_name, "=", l.world_size, "]");
  const int node_id = optional_count(env, "SLURM_NODEID").value_or(0);
  check_below(node_id, "SLURM_NODEID", l.nodes, nodes_name);

  std::string per_node_name = "SLURM_STEP_TASKS_PER_NODE";
  auto per_node_value = env(per_node_name);
  if (!per_node_value) per_node_value = env(per_node_name = "SLURM_TASKS_PER_NODE");
  if (per_node_value) {
    const std::vector<int> per_node = parse_tasks_per_node(*per_node_value, per_node_name);
    GPPF_CHECK(static_cast<int>(per_node.size()) == l.nodes, "launch: ", per_node_name, "='", *per_node_value,
               "' lists ", per_node.size(), " nodes but ", nodes_name, "=", l.nodes);
    GPPF_CHECK(std::accumulate(per_node.begin(), per_node.end(), 0) == l.world_size, "launch: ", per_node_name, "='",
               *per_node_value, "' does not add up to ", world_name, "=", l.world_size);
    l.local_size = per_node[static_cast<std::size_t>(node_id)];
  } else {
    GPPF_CHECK(l.nodes == 1, "launch: SLURM_STEP_TASKS_PER_NODE is not set in a step over ", l.nodes,
               " nodes; cannot tell how many tasks share this node");
    l.local_size = l.world_size;
  }
  check_below(l.local_rank, "SLURM_LOCALID", l.local_size, per_node_name + " (this node's entry)");
  return l;
}

bool is_no_device_list(const std::string& v) { return v.empty() || v == "NoDevFiles" || v.starts_with("-1"); }

}  // namespace

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

std::vector<int> parse_tasks_per_node(const std::string& value, const std::string& variable) {
  std::vector<int> out;
  std::size_t at = 0;
  while (at <= value.size()) {
    const std::size_t comma = std::min(value.find(',', at), value.size());
    const std::string item = value.substr(at, comma - at);
    // "N" or "N(xR)": N tasks on each of R nodes.
    const std::size_t paren = item.find("(x");
    int count = 0, repeat = 1;
    if (paren == std::string::npos) {
      count = parse_count(item, variable + " entry");
    } else {
      GPPF_CHECK(item.ends_with(")"), "launch: ", variable, "='", value, "': bad entry '", item,
                 "' (expected N or N(xR))");
      count = parse_count(item.substr(0, paren), variable + " entry");
      repeat = parse_count(item.substr(paren + 2, item.size() - paren - 3), variable + " repeat");
    }
    GPPF_CHECK(count >= 1 && repeat >= 1, "launch: ", variable, "='", value, "': entry '", item,
               "' has no tasks or no nodes");
    out.insert(out.end(), static_cast<std::size_t>(repeat), count);
    at = comma + 1;
  }
  return out;
}

LaunchInfo detect_launch(const EnvLookup& env) {
  LaunchInfo l;
  if (env("OMPI_COMM_WORLD_SIZE") || env("OMPI_COMM_WORLD_RANK"))
    l = from_openmpi(env);
  else if (env("SLURM_STEP_ID") || env("SLURM_STEPID"))
    l = from_slurm_step(env);
  l.job_id = env("SLURM_JOB_ID").value_or(env("SLURM_JOBID").value_or(""));
  l.restart_count = optional_count(env, "SLURM_RESTART_COUNT").value_or(0);
  if (l.launcher == "none" && !l.job_id.empty()) {
    const int tasks = optional_count(env, "SLURM_NTASKS").value_or(1);
    if (tasks > 1)
      l.note = str("in Slurm job ", l.job_id, " with SLURM_NTASKS=", tasks,
                   " but not started by srun or mpirun: running as a single process (start gppf with srun)");
  }
  return l;
}

std::string LaunchInfo::describe() const {
  std::string where = launcher == "none" ? "single process" : launcher;
  if (!job_id.empty()) where += str(" (slurm job ", job_id, restart_count ? str(", restart ", restart_count) : "", ")");
  return str(where, ": rank ", rank, " of ", world_size, ", local rank ", local_rank, " of ", local_size, ", ", nodes,
             nodes == 1 ? " node" : " nodes");
}

CudaDeviceChoice choose_cuda_device(const LaunchInfo& launch, int runtime_device_count, const EnvLookup& env) {
  CudaDeviceChoice c;
  std::vector<std::string> listed;
  const auto cvd = env("CUDA_VISIBLE_DEVICES");
  if (cvd) {
    if (is_no_device_list(*cvd)) return c;
    std::size_t at = 0;
    while (at <= cvd->size()) {
      const std::size_t comma = std::min(cvd->find(',', at), cvd->size());
      listed.push_back(cvd->substr(at, comma - at));
      at = comma + 1;
    }
  }
  c.visible = std::max(runtime_device_count, 0);
  // The runtime stops at the first entry it cannot use, so it never sees more than the list names.
  if (cvd) c.visible = std::min(c.visible, static_cast<int>(listed.size()));
  if (c.visible == 0) return c;
  c.device = launch.local_rank % c.visible;
  c.physical = cvd ? listed[static_cast<std::size_t>(c.device)] : std::to_string(c.device);
  return c;
}

}  // namespace gppf::dist
