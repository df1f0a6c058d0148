#include "src/train/trainer.hpp"

#include <fcntl.h>
#include <omp.h>
#include <sys/file.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <utility>

#include "core/cuda_runtime.hpp"
#include "core/log.hpp"
#include "core/progress.hpp"
#include "io/checksum.hpp"
#include "kernels/optim.hpp"
#include "src/dist/mpi.hpp"
#include "src/optim/optimizer.hpp"
#include "src/optim/schedule.hpp"
#include "src/train/async_checkpoint.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/executor.hpp"
#include "src/train/network.hpp"
#include "src/train/run_record.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

class MetricsLog {
 public:
  // keep_until >= 0 (a resume): keeps the lines of steps up to it and appends after them.
  // enabled false: a rank other than 0 of a distributed run, which writes nothing.
  MetricsLog(const fs::path& path, std::int64_t keep_until, bool enabled = true) {
    if (!enabled) return;
    std::string kept;
    if (keep_until >= 0) {
      std::ifstream in(path);
      for (std::string line; std::getline(in, line);) {
        const json j = json::parse(line, nullptr, false);
        if (!j.is_discarded() && j.contains("step") && j["step"].is_number_integer() &&
            j["step"].get<std::int64_t>() <= keep_until)
          kept += line + "\n";
      }
    }
    m_out.open(path, std::ios::trunc);
    GPPF_CHECK(m_out, path.string(), ": cannot write");
    m_path = path.string();
    m_out << kept;
    m_out.flush();
    GPPF_CHECK(m_out, m_path, ": write failed (disk full?)");
  }
  void write(const json& line) {
    if (!m_out.is_open()) return;
    m_out << line.dump() << '\n';
    m_out.flush();
    GPPF_CHECK(m_out, m_path, ": write failed (disk full?)");
  }

 private:
  std::ofstream m_out;
  std::string m_path;
};

struct Window {
  double loss = 0;
  std::map<std::string, double> parts;
  std::int64_t steps = 0, samples = 0;
  void clear() { *this = Window(); }
};

std::string fmt(double v, int prec = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", prec, v);
  return buf;
}

// One line of the results table: columns padded as printf's "%-20s %-15s %-10s %-8s %s".
std::string row(const std::string& task, const std::string& type, const std::string& metric, const std::string& test,
                const std::string& val) {
  const auto pad = [](const std::string& x, std::size_t w) {
    return x.size() >= w ? x : x + std::string(w - x.size(), ' ');
  };
  return pad(task, 20) + " " + pad(type, 15) + " " + pad(metric, 10) + " " + pad(test, 8) + " " + val + "\n";
}

// SIGTERM/SIGUSR1/SIGINT/SIGHUP: remembered here, acted on at the next step boundary.
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// Installs the handlers for one run and puts the previous ones back afterwards.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART;  // the loader threads' reads must not see EINTR
    sigemptyset(&sa.sa_mask);
    for (std::size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &sa, &m_previous[i]);
  }
  ~StopSignals() {
    for (std::size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &m_previous[i], nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int pending() const { return g_stop_signal; }

 private:
  static constexpr std::array<int, 4> kSignals{SIGTERM, SIGUSR1, SIGINT, SIGHUP};
  std::array<struct sigaction, 4> m_previous{};
};

const char* signal_name(int sig) {
  switch (sig) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
  }
  return "signal";
}

// RUN_DIR/.lock, held (flock) for the run: a second trainer on the same directory stops at once.
class RunDirLock {
 public:
  explicit RunDirLock(const fs::path& run_dir) {
    const std::string path = (run_dir / ".lock").string();
    m_fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    GPPF_CHECK(m_fd >= 0, path, ": cannot open (", std::strerror(errno), ")");
    if (::flock(m_fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(m_fd);
      GPPF_THROW(run_dir.string(), " is in use by another trainer (", path, " is locked)");
    }
  }
  ~RunDirLock() { ::close(m_fd); }
  RunDirLock(const RunDirLock&) = delete;
  RunDirLock& operator=(const RunDirLock&) = delete;

 private:
  int m_fd = -1;
};

// A previous run's outputs in run_dir.
std::vector<fs::path> previous_outputs(const fs::path& run_dir) {
  std::vector<fs::path> found;
  for (const char* name : {"metrics.jsonl", "summary.json"})
    if (fs::exists(run_dir / name)) found.push_back(run_dir / name);
  if (fs::is_directory(run_dir / "checkpoints") && !fs::is_empty(run_dir / "checkpoints"))
    found.push_back(run_dir / "checkpoints");
  return found;
}

// The root process locks the run directory and refuses (or with --force clears) a previous run's.
std::unique_ptr<RunDirLock> claim_run_dir(const TrainOptions& options, const fs::path& run_dir) {
  if (!options.single_process && dist::world_rank_or_zero() != 0) return nullptr;
  fs::create_directories(run_dir);
  auto lock = std::make_unique<RunDirLock>(run_dir);
  const std::vector<fs::path> previous = previous_outputs(run_dir);
  if (previous.empty() || !options.resume.empty()) return lock;
  GPPF_CHECK(options.force, run_dir.string(), " holds a previous run (", previous.front().filename().string(),
             "); pass --resume auto to continue it, or --force to discard it");
  for (const fs::path& p : previous) fs::remove_all(p);
  log::warn("--force: removed the previous run's ", previous.size(), " outputs in ", run_dir.string());
  return lock;
}

// Every split of every task before step 1: a damaged test split must not wait for the end of
// training. Train shards by size (every step reads them), val and test shards by SHA-256.
void check_splits(const TaskData& data, const TrainConfig& config) {
  for (std::size_t i = 0; i < data.datasets.size(); ++i) {
    const io::Dataset& d = data.datasets[i];
    GPPF_CHECK(d.manifest().find_split("val"), "data set ", d.dir(), " (task '", config.tasks[i].name,
               "') has no 'val' split; re-convert it (gppf convert, or scripts/fetch-data.sh) to write one");
    for (const std::string split : {"train", "val", "test"}) {
      const io::SplitInfo& s = d.manifest().split(split, d.dir());
      GPPF_CHECK(s.count > 0, "data set ", d.dir(), ": split '", split, "' is empty");
      for (const io::ShardInfo& shard : s.shards) {
        const std::string path = d.shard_path(shard);
        std::error_code ec;
        const auto size = static_cast<std::int64_t>(fs::file_size(path, ec));
        GPPF_CHECK(!ec, "data set ", d.dir(), ": shard ", path, " of split '", split, "' cannot be read (",
                   ec.message(), ")");
        GPPF_CHECK(shard.bytes <= 0 || size == shard.bytes, "data set ", d.dir(), ": shard ", path, " of split '",
                   split, "' is damaged: ", size, " bytes, the manifest says ", shard.bytes);
        GPPF_CHECK(split == "train" || shard.sha256.empty() || io::sha256_file(path) == shard.sha256, "data set ",
                   d.dir(), ": shard ", path, " of split '", split,
                   "' is damaged: its SHA-256 differs from the manifest's");
      }
    }
  }
}

std::string rng_text(const std::mt19937_64& rng) {
  std::ostringstream os;
  os << rng;
  return os.str();
}

// `--resume`: the checkpoint to start from, "" for step 0.
std::string resume_checkpoint(const std::string& resume, const fs::path& run_dir) {
  if (resume.empty()) return {};
  if (resume != "auto") return resolve_checkpoint(resume);
  const std::string path = find_resume_checkpoint(run_dir.string());
  // Damaged checkpoints only: starting from step 0 would later prune them; a person must decide.
  GPPF_CHECK(!path.empty() || list_checkpoints(run_dir.string()).empty(), "--resume auto: every checkpoint in ",
             (run_dir / "checkpoints").string(),
             " is damaged (see the lines above); move them away to start from step 0, or pass --resume PATH");
  if (path.empty())
    log::info("--resume auto: no checkpoint in ", (run_dir / "checkpoints").string(), "; starting from step 0");
  return path;
}

// The run directory made, the thread count set and the data sets opened and checked (in this order).
TaskData open_run(const TrainConfig& config, const fs::path& run_dir) {
  fs::create_directories(run_dir / "checkpoints");
  if (config.threads > 0) omp_set_num_threads(config.threads);
  TaskData data = open_tasks(config);
  check_splits(data, config);
  return data;
}

// Owns one training run: the schedule, the steps, periodic evaluation, checkpoints, resume, signals
// and logging. What differs between one process and many ranks is its Executor.
class Trainer {
 public:
  Trainer(const TrainConfig& config, const TrainOptions& options);
  // The steps, then the run record's end (finished, stopped or failed).
  TrainSummary run();

 private:
  TrainSummary run_steps();
  void log_start();
  void resume();
  std::vector<int> sample_active();
  float train_step(std::int64_t step, float lr);
  // Step `next`'s draws, made during the step before it (TrainOptions::prefetch).
  void prefetch(std::int64_t next);
  void keep_buffers();
  void check_skipped(std::int64_t step);
  void log_window(std::int64_t step, float lr, float balance);
  void live_line(std::int64_t step);
  // Seconds left after `step`, at this invocation's average pace so far.
  double eta_seconds(std::int64_t step) const {
    return seconds_since(m_start) / static_cast<double>(step + 1 - m_start_step) *
           static_cast<double>(m_config.steps - step - 1);
  }
  // Re-calibrates BN and evaluates `splits`; writes their lines. Per split: task -> metric -> value.
  std::vector<std::map<std::string, std::map<std::string, double>>> evaluate(std::int64_t step,
                                                                             const std::vector<std::string>& splits,
                                                                             std::int64_t max_batches);
  void write_routing(std::int64_t step);
  // After a step: periodic and timed checkpoints; true when a stop signal ended the run.
  bool checkpoint_or_stop(std::int64_t step, bool last, const StopSignals& signals);
  void save(std::int64_t step, bool background);
  void publish_async(bool wait);
  TrainSummary finish();

  const TrainConfig& m_config;
  const TrainOptions& m_options;
  const Clock::time_point m_start = Clock::now();
  const fs::path m_run_dir;
  const std::unique_ptr<RunDirLock> m_lock;          // the root's, for the whole run
  const std::unique_ptr<log::FileSink> m_train_log;  // the root's RUN_DIR/train.log
  const std::string m_resume_path;
  TaskData m_data;
  Network m_net;
  std::unique_ptr<Executor> m_executor;
  std::vector<std::unique_ptr<io::Loader>> m_loaders;  // of the tasks this process runs
  std::unique_ptr<optim::Optimizer> m_optimizer;
  const optim::Schedule m_schedule;
  std::vector<std::mt19937_64> m_sampling;                      // per task: whether it takes part in a step
  std::uniform_real_distribution<float> m_uniform{0.0f, 1.0f};  // stateless: the engines are the whole state
  CheckpointTensors m_saved_tensors;                            // what this process writes
  std::int64_t m_start_step = 0;
  std::unique_ptr<AsyncCheckpointer> m_async;
  Clock::time_point m_last_save = Clock::now();
  std::unique_ptr<MetricsLog> m_metrics;
  std::vector<Window> m_windows;
  Clock::time_point m_window_start;
  const bool m_tty = stderr_is_terminal();
  Clock::time_point m_last_live = Clock::now();  // the terminal's live line, between log windows
  std::vector<Tensor> m_buffers_before;          // the BN running statistics before the current step
  int m_nonfinite_in_a_row = 0;
  std::int64_t m_step = 0;              // the step being trained
  std::unique_ptr<RunRecord> m_record;  // the root's RUN_DIR/run.json and config.yaml
  // A step's draws made during the step before it: which tasks take part, their staged batches, and
  // the sampling RNGs and loader positions from before the draws. The rule that keeps checkpoints
  // bitwise: a checkpoint at the boundary in between saves those earlier RNGs and positions, so that
  // a resume draws the same batches again, as a run that did not prefetch would. Evaluations use
  // their own loaders and the last step does not prefetch, so nothing else sees the draws.
  struct Prefetch {
    std::int64_t step = -1;  // the step they are for; -1: none
    std::vector<int> active;
    std::map<int, StagedBatch> batches;
    std::vector<std::mt19937_64> sampling;
    std::vector<io::LoaderState> loaders;  // of the tasks this process runs
    std::exception_ptr error;              // rethrown by the step they are for, as if it drew them
  };
  Prefetch m_prefetch;
};

Trainer::Trainer(const TrainConfig& config, const TrainOptions& options)
    : m_config(config),
      m_options(options),
      m_run_dir(options.run_dir),
      m_lock(claim_run_dir(options, m_run_dir)),
      m_train_log(m_lock ? std::make_unique<log::FileSink>((m_run_dir / "train.log").string(), !options.resume.empty())
                         : nullptr),
      m_resume_path(resume_checkpoint(options.resume, m_run_dir)),
      m_data(open_run(config, m_run_dir)),
      m_net(config, m_data.specs),
      m_schedule(config.schedule),
      m_windows(m_data.specs.size()) {
  if (options.prepare) options.prepare(m_net);
  m_executor = make_executor(config, m_net, options.single_process);
  const std::string layout = m_executor->describe(m_net);
  if (m_executor->root() && !layout.empty()) log::info(layout);
  // Loaders of the tasks this process runs. Every replica follows the order of a single process and
  // reads and builds only its share of each micro-batch, so the global batch is the same.
  const std::vector<TaskSpec>& specs = m_data.specs;
  m_loaders.resize(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i)
    if (m_executor->runs(static_cast<int>(i))) {
      io::LoaderConfig lc = train_loader_config(config, specs[i], i, m_net.device());
      lc.share = m_executor->share();
      lc.shares = m_executor->shares();
      m_loaders[i] = std::make_unique<io::Loader>(m_data.datasets[i], lc);
    }
  m_optimizer = optim::Optimizer::create(config.optimizer, m_executor->held_parameters());
  m_executor->attach(*m_optimizer);
  log_start();
  for (std::size_t i = 0; i < specs.size(); ++i) m_sampling.emplace_back(config.seed * 7919ull + i);
  m_saved_tensors = m_executor->checkpoint_tensors(m_net, *m_optimizer);
  if (!m_resume_path.empty()) resume();
  // checkpoint_async: periodic checkpoints snapshot to host memory and write on a background thread;
  // the next step boundaries publish them once every rank's write is done.
  if (config.checkpoint_async)
    m_async = std::make_unique<AsyncCheckpointer>(config.keep_checkpoints, m_executor->comm());
  if (m_executor->root())
    m_record = std::make_unique<RunRecord>(m_run_dir, config,
                                           RunRecord::Start{options.command_line, m_executor->world(), layout,
                                                            m_start_step, m_resume_path, !options.resume.empty()});
  m_last_save = Clock::now();
}

void Trainer::log_start() {
  if (!m_executor->root()) return;
  const std::vector<TaskSpec>& specs = m_data.specs;
  const Device device = m_net.device();
  std::int64_t num_params = 0;
  for (auto* p : m_net.parameters()) num_params += p->numel();
  log::info("gppf train: ", specs.size(), specs.size() == 1 ? " task, " : " tasks, ", m_config.backbone.name, " with ",
            m_config.backbone.num_legos, " legos per layer (top-", m_config.backbone.top_k, "), ", num_params,
            " parameters, ", m_config.steps, " steps on ",
            device.is_host() ? std::string("the host")
                             : str(device.str(), " (", cuda::device_name(device.index), ", ", m_config.precision,
                                   m_config.precision == "fp32" && m_config.tf32 ? ", tf32" : "", ")"));
  for (std::size_t i = 0; i < specs.size(); ++i)
    log::info("  task ", specs[i].config.name, ": ", io::task_name(specs[i].config.type), ", ",
              specs[i].manifest.classes.size(), specs[i].manifest.classes.size() == 1 ? " class, " : " classes, ",
              specs[i].height, "x", specs[i].width, "x", specs[i].channels, ", batch ", specs[i].config.batch_size,
              ", backbone ", fmt(2.0 * static_cast<double>(m_net.backbone_macs(static_cast<int>(i))) / 1e6, 1),
              " MFLOP/sample forward");
}

// Reads the model this process keeps (all of it but the legos other ranks hold; any layout,
// resharding included) and the optimizer state, then the loader positions and sampling RNGs.
void Trainer::resume() {
  const std::string& path = m_resume_path;
  const std::vector<TaskSpec>& specs = m_data.specs;
  ReadOptions ro;
  ro.exact = m_executor->exact_resume();
  const CheckpointMeta meta =
      read_checkpoint(path, {m_net.resident_parameters(), m_net.buffers(), m_optimizer->state()}, ro);
  GPPF_CHECK(meta.tasks.size() == specs.size(), "checkpoint ", path, " does not fit this run: it has ",
             meta.tasks.size(), " tasks, the config ", specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const TaskProgress& t = meta.tasks[i];
    GPPF_CHECK(t.name == specs[i].config.name, "checkpoint ", path, " does not fit this run: task ", i, " is '", t.name,
               "' there, '", specs[i].config.name, "' in the config");
    if (m_loaders[i]) m_loaders[i]->restore(t.loader);
    std::istringstream is(t.sampling_rng);
    is >> m_sampling[i];
    GPPF_CHECK(!is.fail(), "checkpoint ", path, " is damaged: task '", t.name, "' has a bad sampling_rng");
  }
  m_start_step = meta.step;
  GPPF_CHECK(m_start_step <= m_config.steps, "checkpoint ", path, " is at step ", m_start_step,
             ", past the config's steps = ", m_config.steps, "; raise steps to train further");
  const bool root = m_executor->root();
  if (meta.config_yaml != m_config.yaml && root)
    log::warn("resuming ", path, " with a config that differs from the checkpoint's");
  if (root) log::info("resumed from ", path, " at step ", m_start_step);
  // Newer checkpoints of this run directory belong to the timeline being replaced (as do the
  // metrics.jsonl lines after the start step); left there, `--resume auto` would jump back to them.
  if (root)
    for (const auto& p : list_checkpoints(m_run_dir.string()))
      if (checkpoint_step(p) > m_start_step && !fs::equivalent(p, path)) {
        log::warn("removing ", p, ": it is newer than the resumed step ", m_start_step);
        remove_checkpoint(p);
      }
  m_executor->barrier("the resume");
}

std::vector<int> Trainer::sample_active() {
  std::vector<int> active;
  const std::vector<TaskSpec>& specs = m_data.specs;
  for (std::size_t i = 0; i < specs.size(); ++i)
    if (specs[i].config.sampling_weight >= 1.0f || m_uniform(m_sampling[i]) < specs[i].config.sampling_weight)
      active.push_back(static_cast<int>(i));
  return active;
}

void Trainer::prefetch(std::int64_t next) {
  m_prefetch.step = next;
  m_prefetch.sampling = m_sampling;
  m_prefetch.loaders.assign(m_loaders.size(), io::LoaderState());
  for (std::size_t i = 0; i < m_loaders.size(); ++i)
    if (m_loaders[i]) m_prefetch.loaders[i] = m_loaders[i]->state();
  try {
    m_prefetch.active = sample_active();
    for (int t : m_prefetch.active)
      m_prefetch.batches.emplace(t, m_net.stage(t, m_loaders[static_cast<std::size_t>(t)]->next()));
  } catch (...) {
    m_prefetch.error = std::current_exception();
  }
}

float Trainer::train_step(std::int64_t step, float lr) {
  Prefetch mine = std::exchange(m_prefetch, Prefetch());
  if (mine.step != step)
    mine.active = sample_active();
  else if (mine.error)
    std::rethrow_exception(mine.error);
  // A replica's loss counts 1/replicas of the task's: scaled back, it estimates the whole batch's.
  const double scale = m_executor->shares();
  auto run_passes = [&](const std::vector<int>& tasks) {
    std::vector<StagedBatch> batches;
    for (int t : tasks) {
      const auto ti = static_cast<std::size_t>(t);
      const auto it = mine.batches.find(t);
      if (it != mine.batches.end()) {
        batches.push_back(std::move(it->second));
        mine.batches.erase(it);
      } else {
        batches.push_back(m_net.stage(t, m_loaders[ti]->next()));
      }
      m_windows[ti].samples += batches.back().batch.size() * static_cast<std::int64_t>(scale);
    }
    return m_net.train_staged(std::move(batches), step);
  };
  // Multi-rank runs (host only) take batches in rounds whose tasks the executor picks: no prefetch.
  const bool ahead = m_options.prefetch && m_executor->world() == 1 && step + 1 < m_config.steps;
  keep_buffers();
  const StepResult r = simt_step(*m_executor, m_net, *m_optimizer, step, lr, mine.active, run_passes, [&] {
    if (ahead) prefetch(step + 1);
  });
  GPPF_CHECK(mine.batches.empty(), "step ", step, ": ", mine.batches.size(), " prefetched batches were not trained on");
  // Read after the update with the step's one sync; a non-finite loss also made the gradient norm
  // non-finite, so the optimizer skipped the step and the error below loses nothing.
  for (const TaskLoss& loss : r.losses) {
    const auto ti = static_cast<std::size_t>(loss.task);
    const TaskSpec& spec = m_data.specs[ti];
    GPPF_CHECK(std::isfinite(loss.total), "task '", spec.config.name, "': the loss is ", loss.total, " at step ", step,
               " (lr ", lr, "); lower optimizer.lr or check the data set ", spec.config.dataset);
    Window& w = m_windows[ti];
    w.loss += loss.total * scale;
    for (const auto& [k, v] : loss.parts) w.parts[k] += v;
    ++w.steps;
  }
  check_skipped(step);
  return r.balance;
}

void Trainer::keep_buffers() {
  const std::vector<nn::NamedTensor> buffers = m_net.buffers();
  if (m_buffers_before.size() != buffers.size()) {
    m_buffers_before.clear();
    for (const auto& b : buffers) m_buffers_before.push_back(b.second->clone());
    return;
  }
  std::vector<kernels::CopyJob> jobs;  // one launch per pack of tensors, not one per buffer
  for (std::size_t i = 0; i < buffers.size(); ++i) jobs.push_back({buffers[i].second, &m_buffers_before[i]});
  kernels::copy_tensors(jobs, m_net.stream());
}

// A step the optimizer skipped (non-finite gradient norm, the same on every process) must leave no
// trace: its forward passes updated the BN running statistics with what may be inf or NaN.
void Trainer::check_skipped(std::int64_t step) {
  if (!m_optimizer->last_step_skipped()) {
    m_nonfinite_in_a_row = 0;
    return;
  }
  const std::vector<nn::NamedTensor> buffers = m_net.buffers();
  std::vector<kernels::CopyJob> jobs;
  for (std::size_t i = 0; i < buffers.size(); ++i) jobs.push_back({&m_buffers_before[i], buffers[i].second});
  kernels::copy_tensors(jobs, m_net.stream());
  ++m_nonfinite_in_a_row;
  GPPF_CHECK(m_nonfinite_in_a_row < m_config.max_nonfinite_steps, "step ", step + 1,
             ": the gradient norm was non-finite in ", m_nonfinite_in_a_row,
             " steps in a row (max_nonfinite_steps); stopping without saving them; lower optimizer.lr or check the "
             "data sets");
}

void Trainer::log_window(std::int64_t step, float lr, float balance) {
  const std::vector<TaskSpec>& specs = m_data.specs;
  const double dt = std::max(1e-9, seconds_since(m_window_start));
  const double eta = eta_seconds(step);
  std::string line = str("step ", step + 1, "/", m_config.steps, " lr ", fmt(lr, 5));
  std::vector<json> lines(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const Window& w = m_windows[i];
    if (w.steps == 0 || !m_executor->reports(static_cast<int>(i))) continue;
    json j = {{"step", step + 1}, {"task", specs[i].config.name},
              {"split", "train"}, {"loss", w.loss / static_cast<double>(w.steps)},
              {"lr", lr},         {"samples_per_s", static_cast<double>(w.samples) / dt}};
    for (const auto& [k, v] : w.parts) j["loss_" + k] = v / static_cast<double>(w.steps);
    lines[i] = j;
  }
  for (auto& w : m_windows) w.clear();
  m_executor->share(lines, "the training log");
  for (std::size_t i = 0; i < specs.size(); ++i) {
    json& j = lines[i];
    if (j.is_null()) continue;
    if (balance > 0) j["balance"] = balance;
    m_metrics->write(j);
    line += str(" | ", specs[i].config.name, " ", fmt(j["loss"].get<double>(), 3), " ",
                fmt(j["samples_per_s"].get<double>(), 0), "/s");
  }
  line += str(" | eta ", fmt(eta, 0), " s");
  if (m_tty && m_executor->root()) {
    std::fprintf(stderr, "\r%s\033[K", line.c_str());
    log::file_only(log::Level::Info, line);
  } else if (m_executor->root()) {
    log::info(line);
  }
  m_window_start = m_last_live = Clock::now();
}

// On a terminal, between log windows: the step, the current window's losses and speed so far and
// the ETA, about once a second (a window of log_every steps can take minutes on a CPU).
void Trainer::live_line(std::int64_t step) {
  if (!m_tty || !m_executor->root() || seconds_since(m_last_live) < 1.0) return;
  m_last_live = Clock::now();
  const std::vector<TaskSpec>& specs = m_data.specs;
  const double dt = std::max(1e-9, seconds_since(m_window_start));
  std::string line = str("step ", step + 1, "/", m_config.steps);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const Window& w = m_windows[i];
    if (w.steps == 0 || !m_executor->reports(static_cast<int>(i))) continue;
    line += str(" | ", specs[i].config.name, " ", fmt(w.loss / static_cast<double>(w.steps), 3), " ",
                fmt(static_cast<double>(w.samples) / dt, 0), "/s");
  }
  const double eta = eta_seconds(step);
  std::fprintf(stderr, "\r%s | eta %s s\033[K", printable(line).c_str(), fmt(eta, 0).c_str());
}

std::vector<std::map<std::string, std::map<std::string, double>>> Trainer::evaluate(
    std::int64_t step, const std::vector<std::string>& splits, std::int64_t max_batches) {
  const std::vector<TaskSpec>& specs = m_data.specs;
  const EvalResults results = m_executor->evaluate(m_net, m_data.datasets, m_config, {step, splits, max_batches});
  std::vector<std::map<std::string, std::map<std::string, double>>> by_split(splits.size());
  for (std::size_t s = 0; s < splits.size(); ++s)
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const TaskEval& e = results[s][i];
      by_split[s][specs[i].config.name] = e.metrics;
      // Test numbers go to summary.json only: metrics.jsonl holds one evaluation split (val), which
      // is what `gppf report` charts.
      if (splits[s] == "test") continue;
      json line = {{"step", step}, {"task", specs[i].config.name}, {"split", splits[s]}, {"samples", e.samples}};
      for (const auto& [k, v] : e.metrics) line[k] = v;
      m_metrics->write(line);
    }
  write_routing(step);
  return by_split;
}

// Which legos each task routes to, per layer, for the report's usage heat map.
void Trainer::write_routing(std::int64_t step) {
  auto layers = m_net.backbone().routed_layers();
  for (std::size_t i = 0; i < m_data.specs.size(); ++i) {
    json usage = json::array(), num_legos = json::array();
    for (auto* l : layers) {
      usage.push_back(l->route(static_cast<int>(i), step, false).legos);
      num_legos.push_back(l->num_legos_total());
    }
    m_metrics->write({{"step", step},
                      {"task", m_data.specs[i].config.name},
                      {"split", "routing"},
                      {"legos", usage},
                      {"num_legos", num_legos}});
  }
}

void Trainer::publish_async(bool wait) {
  if (!m_async || !m_async->in_flight()) return;
  const int pending = m_executor->agree_max({m_async->ready() ? 0 : 1}, "the asynchronous checkpoint's progress")[0];
  if (pending && !wait) return;
  const std::string path = m_async->finish();
  if (m_executor->root()) log::info("checkpoint ", path, " (written in the background)");
}

void Trainer::save(std::int64_t step, bool background) {
  const std::vector<TaskSpec>& specs = m_data.specs;
  CheckpointMeta meta;
  meta.step = step;
  meta.config_yaml = m_config.yaml;
  meta.optimizer_type = m_config.optimizer.type;
  // Loader positions live on the processes that run the tasks: shared, so that every file's meta is whole.
  // With the next step's draws made (m_prefetch), the positions and RNGs from before them.
  const bool ahead = m_prefetch.step == step;
  std::vector<json> loader_state(specs.size());
  std::vector<std::string> task_names;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (m_executor->reports(static_cast<int>(i)))
      loader_state[i] = (ahead ? m_prefetch.loaders[i] : m_loaders[i]->state()).to_json();
    task_names.push_back(specs[i].config.name);
  }
  m_executor->share(loader_state, "the loader positions for a checkpoint");
  m_executor->describe_checkpoint(meta, task_names);
  for (std::size_t i = 0; i < specs.size(); ++i)
    meta.tasks.push_back({specs[i].config.name, io::task_name(specs[i].config.type),
                          fs::absolute(specs[i].config.dataset).lexically_normal().string(),
                          io::LoaderState::from_json(loader_state[i].get<std::string>()),
                          rng_text(ahead ? m_prefetch.sampling[i] : m_sampling[i])});
  m_last_save = Clock::now();
  const bool root = m_executor->root();
  if (m_async && background) {
    m_async->begin(m_run_dir.string(), step, m_executor->rank(), m_executor->world(), meta, m_saved_tensors);
    if (root)
      log::info("checkpoint of step ", step, ": snapshot in ", fmt(m_async->snapshot_seconds() * 1e3, 1), " ms (",
                fmt(static_cast<double>(m_async->snapshot_bytes()) / 1e6, 1), " MB), writing in the background");
    return;
  }
  publish_async(true);
  const std::string path =
      save_checkpoint(m_run_dir.string(), m_config.keep_checkpoints, meta, m_saved_tensors, m_executor->comm());
  if (root) log::info("checkpoint ", path);
}

bool Trainer::checkpoint_or_stop(std::int64_t step, bool last, const StopSignals& signals) {
  const bool root = m_executor->root();
  // Processes decide together: a timer is the root's, a signal counts when any process got one.
  const int timer_due =
      root && m_config.checkpoint_minutes > 0 && seconds_since(m_last_save) >= 60.0 * m_config.checkpoint_minutes;
  const std::vector<int> agreed =
      m_executor->agree_max({timer_due, signals.pending()}, "the checkpoint timer and stop signals");
  publish_async(false);
  bool saved = false;
  if (!last && ((m_config.checkpoint_every > 0 && (step + 1) % m_config.checkpoint_every == 0) || agreed[0])) {
    save(step + 1, true);
    saved = true;
  }
  const int pending = agreed[1];
  if (pending == 0 || last) return false;
  if (m_tty && root) std::fprintf(stderr, "\n");
  if (root)
    log::info("signal ", signal_name(pending), ": checkpointing at step ", step + 1,
              " and stopping (resume with --resume auto)");
  if (!saved) save(step + 1, false);
  publish_async(true);
  return true;
}

TrainSummary Trainer::run() {
  try {
    const TrainSummary s = run_steps();
    if (m_record) m_record->end(s.interrupted ? "stopped" : "finished", s.interrupted ? kExitRequeue : 0, s.steps);
    return s;
  } catch (const std::exception& e) {
    const auto* error = dynamic_cast<const Error*>(&e);
    try {
      log::file_only(log::Level::Error, error ? error->reason() : std::string(e.what()));
      if (m_record) m_record->end("failed", 1, m_step, error ? error->reason() : std::string(e.what()));
    } catch (const std::exception&) {  // a full disk: the error that got us here is the one to report
    }
    throw;
  }
}

TrainSummary Trainer::run_steps() {
  const StopSignals signals;
  m_metrics = std::make_unique<MetricsLog>(m_run_dir / "metrics.jsonl", m_resume_path.empty() ? -1 : m_start_step,
                                           m_executor->root());
  m_window_start = Clock::now();
  m_net.parameters_changed();  // after a resume or a fine-tune's set-up wrote parameter values
  for (std::int64_t step = m_start_step; step < m_config.steps; ++step) {
    m_step = step;
    const float lr = m_schedule.lr_at(step);
    const float balance = train_step(step, lr);
    const bool last = step + 1 == m_config.steps;
    if ((step + 1) % m_config.log_every == 0 || last)
      log_window(step, lr, balance);
    else
      live_line(step);
    if (m_config.eval_every > 0 && (step + 1) % m_config.eval_every == 0 && !last) {
      if (m_tty && m_executor->root()) std::fprintf(stderr, "\n");
      const auto val = evaluate(step + 1, {"val"}, m_config.eval_batches);  // named: [0] of a temporary dangles
      for (const auto& [task, m] : val[0])
        for (const auto& [k, v] : m)
          if (m_executor->root()) log::info("eval step ", step + 1, " ", task, " ", k, " ", fmt(v));
    }
    if (checkpoint_or_stop(step, last, signals)) {
      TrainSummary stopped;
      stopped.steps = step + 1;
      stopped.wall_seconds = seconds_since(m_start);
      stopped.interrupted = true;
      return stopped;
    }
  }
  if (m_tty && m_executor->root()) std::fprintf(stderr, "\n");
  m_executor->log_traffic(m_net, m_config.steps - m_start_step);
  return finish();
}

// The final evaluation, the last checkpoint (after it: its re-calibrated BN statistics are the ones
// to keep), summary.json and the table.
TrainSummary Trainer::finish() {
  const std::vector<TaskSpec>& specs = m_data.specs;
  TrainSummary summary;
  summary.steps = m_config.steps;
  const std::int64_t cap = m_config.final_eval_batches;
  if (m_executor->root())
    log::info("final evaluation on test and val (",
              cap > 0 ? str("at most ", cap, " batches per task and split: final_eval_batches") : "the whole splits",
              ")");
  const auto final_eval = evaluate(m_config.steps, {"test", "val"}, cap);  // test read once, at the end
  summary.metrics = final_eval[0];
  summary.val = final_eval[1];
  for (std::size_t i = 0; i < specs.size(); ++i)
    if (m_loaders[i]) summary.bytes_read[specs[i].config.name] = m_loaders[i]->stats().bytes_read;
  save(m_config.steps, false);
  summary.wall_seconds = seconds_since(m_start);
  const Network::GraphStats gs = m_net.graph_stats();
  summary.graph_captures = gs.captures;
  summary.graph_launches = gs.launches;
  if (gs.launches > 0 && m_executor->root())
    log::info("cuda_graphs: ", gs.captures, " captures, ", gs.launches, " launches (", gs.nodes,
              " calls in the last graph, its pool ", fmt(static_cast<double>(gs.pool_bytes) / 1e6, 1), " MB)");
  // eval_batches 0: the metrics are over the whole splits; N: over at most N batches of each.
  json s = {{"steps", summary.steps},
            {"wall_seconds", summary.wall_seconds},
            {"eval_batches", cap},
            {"tasks", json::object()}};
  for (const auto& spec : specs) {
    json m = json::object(), val = json::object();
    for (const auto& [k, v] : summary.metrics[spec.config.name]) m[k] = v;
    for (const auto& [k, v] : summary.val[spec.config.name]) val[k] = v;
    s["tasks"][spec.config.name] = {
        {"type", io::task_name(spec.config.type)}, {"dataset", spec.config.dataset}, {"metrics", m}, {"val", val}};
  }
  if (!m_executor->root()) return summary;
  write_atomically(m_run_dir / "summary.json", s.dump(2) + "\n");

  // The table on stdout, and in train.log.
  std::string table = row("task", "type", "metric", "test", "val");
  for (const auto& spec : specs)
    for (const auto& [k, v] : summary.metrics[spec.config.name])
      table += row(spec.config.name, io::task_name(spec.config.type), k, fmt(v, 4),
                   fmt(summary.val[spec.config.name][k], 4));
  if (cap > 0) table += str("(test and val: at most ", cap, " batches per task, not the whole splits)\n");
  table += str(summary.steps, " steps in ", fmt(summary.wall_seconds, 1), " s; ", m_options.run_dir, "/summary.json\n");
  std::fputs(("\n" + table).c_str(), stdout);
  log::file_raw(table);
  return summary;
}

}  // namespace

io::LoaderConfig train_loader_config(const TrainConfig& c, const TaskSpec& t, std::size_t index, const Device& device) {
  io::LoaderConfig l;
  l.split = "train";
  l.batch_size = t.config.batch_size;
  l.workers = c.loader_workers;
  l.seed = c.seed * 1000003ull + index;
  l.augment = t.config.augment;
  l.pinned = device.is_cuda();  // page-locked: the copy to the GPU runs at full speed
  return l;
}

io::LoaderConfig eval_loader_config(const TrainConfig& c, const TaskSpec& t, const std::string& split,
                                    const Device& device) {
  io::LoaderConfig l;
  l.split = split;
  l.batch_size = std::max(t.config.batch_size, 64);
  l.workers = c.loader_workers;
  l.shuffle = false;
  l.drop_last = false;
  l.repeat = false;
  l.pinned = device.is_cuda();
  return l;
}

io::LoaderConfig calibration_loader_config(const TrainConfig& c, const TaskSpec& t, const Device& device) {
  io::LoaderConfig lc = eval_loader_config(c, t, "train", device);
  lc.batch_size = t.config.batch_size;
  lc.shuffle = true;
  lc.seed = c.seed + 17;
  return lc;
}

void calibrate_task(Network& net, int task, const io::Dataset& dataset, const TrainConfig& config) {
  if (config.bn_calibration_batches <= 0) return;
  io::Loader calib(dataset,
                   calibration_loader_config(config, net.tasks()[static_cast<std::size_t>(task)], net.device()));
  io::Batch batch;
  for (int b = 0; b < config.bn_calibration_batches && calib.next(batch); ++b) net.calibrate(task, batch, b);
}

std::map<std::string, double> evaluate_task(Network& net, int task, const io::Dataset& dataset,
                                            const TrainConfig& config, const std::string& split,
                                            std::int64_t max_batches, std::int64_t* samples) {
  const TaskSpec& spec = net.tasks()[static_cast<std::size_t>(task)];
  io::Loader loader(dataset, eval_loader_config(config, spec, split, net.device()));
  TaskEvaluator eval(spec);
  std::int64_t total = loader.batches_per_epoch(0);
  if (max_batches > 0) total = std::min(total, max_batches);
  Progress progress(str("eval ", split, " ", spec.config.name, ": batch"), total);
  io::Batch batch;
  for (std::int64_t n = 0; (max_batches == 0 || n < max_batches) && loader.next(batch); ++n) {
    net.evaluate(task, batch, eval);
    progress.update(n + 1);
  }
  if (samples) *samples = eval.samples();
  return eval.metrics();
}

TrainSummary run_training(const TrainConfig& config, const TrainOptions& options) {
  GPPF_CHECK(!options.run_dir.empty(), "train: --out RUN_DIR is required");
  Trainer trainer(config, options);
  return trainer.run();
}

}  // namespace gppf::train
