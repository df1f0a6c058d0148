#include "src/train/trainer.hpp"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/cuda_runtime.hpp"
#include "core/log.hpp"
#include "src/optim/optimizer.hpp"
#include "src/optim/schedule.hpp"
#include "src/train/async_checkpoint.hpp"
#include "src/train/checkpoint.hpp"
#include "src/train/distributed.hpp"
#include "src/train/network.hpp"

namespace gppf::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Writes to a temporary file and renames it over `path`, so a reader never sees half a file.
void write_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    GPPF_CHECK(out, tmp.string(), ": cannot write");
    out << text;
    out.flush();
    GPPF_CHECK(out, tmp.string(), ": write failed (disk full?)");
  }
  fs::rename(tmp, path);
}

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
    m_out << kept;
  }
  void write(const json& line) {
    if (!m_out.is_open()) return;
    m_out << line.dump() << '\n';
    m_out.flush();
  }

 private:
  std::ofstream m_out;
};

io::LoaderConfig eval_loader_config(const TrainConfig& c, const TaskSpec& t, const std::string& split) {
  io::LoaderConfig l;
  l.split = split;
  l.batch_size = std::max(t.config.batch_size, 64);
  l.workers = c.loader_workers;
  l.shuffle = false;
  l.drop_last = false;
  l.repeat = false;
  l.pinned = Device::parse(c.device).is_cuda();
  return l;
}

// BN re-calibration: training batches in a fixed shuffled order.
io::LoaderConfig calibration_loader_config(const TrainConfig& c, const TaskSpec& t) {
  io::LoaderConfig lc = eval_loader_config(c, t, "train");
  lc.batch_size = t.config.batch_size;
  lc.shuffle = true;
  lc.seed = c.seed + 17;
  return lc;
}

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

// SIGTERM/SIGUSR1: remembered here, acted on at the next step boundary.
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
    sigaction(SIGTERM, &sa, &m_term);
    sigaction(SIGUSR1, &sa, &m_usr1);
  }
  ~StopSignals() {
    sigaction(SIGTERM, &m_term, nullptr);
    sigaction(SIGUSR1, &m_usr1, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int pending() const { return g_stop_signal; }

 private:
  struct sigaction m_term {
  }, m_usr1{};
};

std::string rng_text(const std::mt19937_64& rng) {
  std::ostringstream os;
  os << rng;
  return os.str();
}

}  // namespace

io::LoaderConfig train_loader_config(const TrainConfig& c, const TaskSpec& t, std::size_t index) {
  io::LoaderConfig l;
  l.split = "train";
  l.batch_size = t.config.batch_size;
  l.workers = c.loader_workers;
  l.seed = c.seed * 1000003ull + index;
  l.augment = t.config.augment;
  l.pinned = Device::parse(c.device).is_cuda();  // page-locked: the copy to the GPU runs at full speed
  return l;
}

void calibrate_task(Network& net, int task, const io::Dataset& dataset, const TrainConfig& config) {
  if (config.bn_calibration_batches <= 0) return;
  io::Loader calib(dataset, calibration_loader_config(config, net.tasks()[static_cast<std::size_t>(task)]));
  io::Batch batch;
  for (int b = 0; b < config.bn_calibration_batches && calib.next(batch); ++b) net.calibrate(task, batch, b);
}

std::map<std::string, double> evaluate_task(Network& net, int task, const io::Dataset& dataset,
                                            const TrainConfig& config, const std::string& split,
                                            std::int64_t max_batches, std::int64_t* samples) {
  const TaskSpec& spec = net.tasks()[static_cast<std::size_t>(task)];
  io::Loader loader(dataset, eval_loader_config(config, spec, split));
  TaskEvaluator eval(spec);
  io::Batch batch;
  for (std::int64_t n = 0; (max_batches == 0 || n < max_batches) && loader.next(batch); ++n)
    net.evaluate(task, batch, eval);
  if (samples) *samples = eval.samples();
  return eval.metrics();
}

TrainSummary run_training(const TrainConfig& config, const TrainOptions& options) {
  const auto t_start = Clock::now();
  GPPF_CHECK(!options.run_dir.empty(), "train: --out RUN_DIR is required");
  const fs::path run_dir(options.run_dir);
  std::string resume_path;
  if (options.resume == "auto") {
    resume_path = find_resume_checkpoint(run_dir.string());
    // Damaged checkpoints only: starting from step 0 would later prune them; a person must decide.
    GPPF_CHECK(!resume_path.empty() || list_checkpoints(run_dir.string()).empty(),
               "--resume auto: every checkpoint in ", (run_dir / "checkpoints").string(),
               " is damaged (see the lines above); move them away to start from step 0, or pass --resume PATH");
    if (resume_path.empty())
      log::info("--resume auto: no checkpoint in ", (run_dir / "checkpoints").string(), "; starting from step 0");
  } else if (!options.resume.empty()) {
    resume_path = resolve_checkpoint(options.resume);
  }
  fs::create_directories(run_dir / "checkpoints");
  if (config.threads > 0) omp_set_num_threads(config.threads);

  // Data sets, loaders and the resolved tasks.
  TaskData tasks = open_tasks(config);
  const std::vector<io::Dataset>& datasets = tasks.datasets;
  const std::vector<TaskSpec>& specs = tasks.specs;
  Network net(config, specs);
  if (options.prepare) options.prepare(net);
  // More than one rank: the layout, its communicators and the lockstep (docs/SCALING.md).
  const std::unique_ptr<Distributed> D = options.single_process ? nullptr : Distributed::create(config, net);
  GPPF_CHECK(!D || net.device().is_host(), config.config_path, ": key 'device': ", config.device,
             " trains in one process for now; multi-rank runs (gradient all-reduce, expert-parallel exchange, "
             "synchronised BN) are host-only");
  const bool root = !D || D->root();
  auto runs = [&](std::size_t task) { return !D || D->runs(static_cast<int>(task)); };
  auto reports = [&](std::size_t task) { return !D || D->reports(static_cast<int>(task)); };
  if (D && root) log::info(D->describe(net));

  // Loaders of the tasks this rank runs (every replica reads the whole micro-batch and takes its slice,
  // so that the global batch is the one of a single process).
  std::vector<std::unique_ptr<io::Loader>> loaders(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i)
    if (runs(i)) loaders[i] = std::make_unique<io::Loader>(datasets[i], train_loader_config(config, specs[i], i));

  std::vector<nn::Parameter*> params = D ? D->held_parameters() : net.parameters();
  auto optimizer = optim::Optimizer::create(config.optimizer, params);
  if (D) optimizer->set_norm_reducer(D->norm_reducer());
  const optim::Schedule schedule(config.schedule);
  std::int64_t num_params = 0;
  for (auto* p : net.parameters()) num_params += p->value.numel();
  if (root)
    log::info("gppf train: ", specs.size(), specs.size() == 1 ? " task, " : " tasks, ", config.backbone.name, " with ",
              config.backbone.num_legos, " legos per layer (top-", config.backbone.top_k, "), ", num_params,
              " parameters, ", config.steps, " steps on ",
              net.device().is_host()
                  ? std::string("the host")
                  : str(net.device().str(), " (", cuda::device_name(net.device().index), ", ", config.precision,
                        config.precision == "fp32" && config.tf32 ? ", tf32" : "", ")"));
  for (std::size_t i = 0; i < specs.size() && root; ++i)
    log::info("  task ", specs[i].config.name, ": ", io::task_name(specs[i].config.type), ", ",
              specs[i].manifest.classes.size(), specs[i].manifest.classes.size() == 1 ? " class, " : " classes, ",
              specs[i].height, "x", specs[i].width, "x", specs[i].channels, ", batch ", specs[i].config.batch_size,
              ", backbone ", fmt(2.0 * static_cast<double>(net.backbone_macs(static_cast<int>(i))) / 1e6, 1),
              " MFLOP/sample forward");

  std::vector<std::mt19937_64> sampling;
  for (std::size_t i = 0; i < specs.size(); ++i) sampling.emplace_back(config.seed * 7919ull + i);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);  // stateless: the engines are the whole state

  // What this rank writes (each tensor by exactly one rank) and what it reads back: the whole model
  // (every rank holds all of it; any layout, resharding included) and the optimizer state it updates.
  CheckpointTensors tensors{params, net.buffers(), optimizer->state()};
  CheckpointTensors to_read{net.parameters(), net.buffers(), optimizer->state()};
  if (D) {
    auto state_owner = [](const std::string& n) { return n.substr(0, n.rfind('.')); };
    tensors = {};
    for (nn::Parameter* p : net.parameters())
      if (D->writes_parameter(p->name)) tensors.params.push_back(p);
    for (const auto& b : net.buffers())
      if (D->writes_buffer(b.first)) tensors.buffers.push_back(b);
    for (const auto& o : optimizer->state())
      if (D->writes_parameter(state_owner(o.first))) tensors.optimizer.push_back(o);
  }
  std::int64_t start_step = 0;
  if (!resume_path.empty()) {
    ReadOptions ro;
    ro.exact = !D;
    const CheckpointMeta meta = read_checkpoint(resume_path, to_read, ro);
    GPPF_CHECK(meta.tasks.size() == specs.size(), "checkpoint ", resume_path, " does not fit this run: it has ",
               meta.tasks.size(), " tasks, the config ", specs.size());
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const TaskProgress& t = meta.tasks[i];
      GPPF_CHECK(t.name == specs[i].config.name, "checkpoint ", resume_path, " does not fit this run: task ", i,
                 " is '", t.name, "' there, '", specs[i].config.name, "' in the config");
      if (loaders[i]) loaders[i]->restore(t.loader);
      std::istringstream is(t.sampling_rng);
      is >> sampling[i];
      GPPF_CHECK(!is.fail(), "checkpoint ", resume_path, " is damaged: task '", t.name, "' has a bad sampling_rng");
    }
    start_step = meta.step;
    GPPF_CHECK(start_step <= config.steps, "checkpoint ", resume_path, " is at step ", start_step,
               ", past the config's steps = ", config.steps, "; raise steps to train further");
    if (meta.config_yaml != config.yaml && root)
      log::warn("resuming ", resume_path, " with a config that differs from the checkpoint's");
    if (root) log::info("resumed from ", resume_path, " at step ", start_step);
    // Newer checkpoints of this run directory belong to the timeline being replaced (as do the
    // metrics.jsonl lines after start_step); left there, `--resume auto` would jump back to them.
    if (root)
      for (const auto& p : list_checkpoints(run_dir.string()))
        if (checkpoint_step(p) > start_step && !fs::equivalent(p, resume_path)) {
          log::warn("removing ", p, ": it is newer than the resumed step ", start_step);
          remove_checkpoint(p);
        }
    if (D) D->barrier("the resume");
  }
  std::vector<std::string> task_names;
  for (const auto& s : specs) task_names.push_back(s.config.name);
  auto t_saved = Clock::now();
  const MPI_Comm comm = D ? D->world_comm().raw() : MPI_COMM_NULL;
  // checkpoint_async: periodic checkpoints snapshot to host memory and write on a background thread;
  // the next step boundaries publish them once every rank's write is done.
  std::unique_ptr<AsyncCheckpointer> async;
  if (config.checkpoint_async) async = std::make_unique<AsyncCheckpointer>(config.keep_checkpoints, comm);
  auto publish_async = [&](bool wait) {
    if (!async || !async->in_flight()) return;
    int pending = async->ready() ? 0 : 1;
    if (D) pending = D->agree_max(pending, "the asynchronous checkpoint's progress");
    if (pending && !wait) return;
    const std::string path = async->finish();
    if (root) log::info("checkpoint ", path, " (written in the background)");
  };
  auto save = [&](std::int64_t step, bool background) {
    CheckpointMeta meta;
    meta.step = step;
    meta.config_yaml = config.yaml;
    meta.optimizer_type = config.optimizer.type;
    // Loader positions live on the ranks that run the tasks: gathered, so that every file's meta is whole.
    std::vector<std::string> loader_state(specs.size());
    for (std::size_t i = 0; i < specs.size(); ++i)
      if (reports(i)) loader_state[i] = loaders[i]->state().to_json();
    if (D) {
      json mine = json::object();
      for (std::size_t i = 0; i < specs.size(); ++i)
        if (reports(i)) mine[std::to_string(i)] = loader_state[i];
      for (const auto& text : D->gather(mine.dump(), "the loader positions for a checkpoint")) {
        const json part = json::parse(text);
        for (const auto& [k, v] : part.items()) loader_state[std::stoul(k)] = v.get<std::string>();
      }
      meta.world_size = D->world();
      meta.layout = D->layout().to_json(task_names);
    }
    for (std::size_t i = 0; i < specs.size(); ++i)
      meta.tasks.push_back({specs[i].config.name, io::task_name(specs[i].config.type),
                            fs::absolute(specs[i].config.dataset).lexically_normal().string(),
                            io::LoaderState::from_json(loader_state[i]), rng_text(sampling[i])});
    t_saved = Clock::now();
    if (async && background) {
      async->begin(run_dir.string(), step, D ? D->rank() : 0, D ? D->world() : 1, meta, tensors);
      if (root)
        log::info("checkpoint of step ", step, ": snapshot in ", fmt(async->snapshot_seconds() * 1e3, 1), " ms (",
                  fmt(static_cast<double>(async->snapshot_bytes()) / 1e6, 1), " MB), writing in the background");
      return;
    }
    publish_async(true);
    const std::string path = save_checkpoint(run_dir.string(), config.keep_checkpoints, meta, tensors, comm);
    if (root) log::info("checkpoint ", path);
  };
  const StopSignals signals;

  MetricsLog metrics(run_dir / "metrics.jsonl", resume_path.empty() ? -1 : start_step, root);
  const bool tty = isatty(STDERR_FILENO) != 0;
  std::vector<Window> windows(specs.size());

  auto evaluate = [&](std::int64_t step, bool full) {
    std::map<std::string, std::map<std::string, double>> results;
    if (!D) {
      for (std::size_t i = 0; i < specs.size(); ++i) {
        const int t = static_cast<int>(i);
        calibrate_task(net, t, datasets[i], config);
        std::int64_t samples = 0;
        const auto m =
            evaluate_task(net, t, datasets[i], config, config.eval_split, full ? 0 : config.eval_batches, &samples);
        json line = {
            {"step", step}, {"task", specs[i].config.name}, {"split", config.eval_split}, {"samples", samples}};
        for (const auto& [k, v] : m) line[k] = v;
        metrics.write(line);
        results[specs[i].config.name] = m;
      }
    } else {
      // Every rank re-calibrates and evaluates the tasks it runs (replicas repeat the work of replica 0:
      // whole batches, no synchronisation), in lockstep with the members of its block; the numbers
      // go to rank 0.
      // One run of rounds for all of this rank's work, so that every member of a block leaves it together.
      std::vector<int> mine_tasks;
      for (std::size_t i = 0; i < specs.size(); ++i)
        if (runs(i)) mine_tasks.push_back(static_cast<int>(i));
      std::map<int, std::unique_ptr<TaskEvaluator>> evals;
      std::size_t item = 0;
      int phase = 0;  // 0: open the calibration loader, 1: calibrate, 2: evaluate
      std::unique_ptr<io::Loader> loader;
      io::Batch batch;
      std::int64_t n = 0;
      const std::int64_t max_batches = full ? 0 : config.eval_batches;
      D->run_rounds(net, step, [&] {
        while (item < mine_tasks.size()) {
          const int t = mine_tasks[item];
          const auto ti = static_cast<std::size_t>(t);
          if (phase == 0) {
            loader = std::make_unique<io::Loader>(datasets[ti], calibration_loader_config(config, specs[ti]));
            n = 0;
            phase = 1;
          }
          if (phase == 1) {
            if (n < config.bn_calibration_batches && loader->next(batch)) {
              net.calibrate(t, batch, static_cast<int>(n++));
              return true;
            }
            loader =
                std::make_unique<io::Loader>(datasets[ti], eval_loader_config(config, specs[ti], config.eval_split));
            evals[t] = std::make_unique<TaskEvaluator>(specs[ti]);
            n = 0;
            phase = 2;
          }
          if ((max_batches == 0 || n < max_batches) && loader->next(batch)) {
            net.evaluate(t, batch, *evals[t]);
            ++n;
            return true;
          }
          ++item;
          phase = 0;
        }
        return false;
      });
      json mine = json::object();
      for (const auto& [t, eval] : evals)
        if (reports(static_cast<std::size_t>(t))) {
          json m = json::object();
          for (const auto& [key, v] : eval->metrics()) m[key] = v;
          mine[specs[static_cast<std::size_t>(t)].config.name] = {{"samples", eval->samples()}, {"metrics", m}};
        }
      for (const auto& text : D->gather(mine.dump(), "the evaluation results")) {
        const json part = json::parse(text);
        for (const auto& [task, r] : part.items())
          for (const auto& [key, v] : r.at("metrics").items()) results[task][key] = v.get<double>();
      }
      for (const auto& spec : specs) {
        json line = {{"step", step}, {"task", spec.config.name}, {"split", config.eval_split}};
        for (const auto& [key, v] : results[spec.config.name]) line[key] = v;
        metrics.write(line);
      }
    }
    // Which legos each task routes to, per layer, for the report's usage heat map.
    auto layers = net.backbone().lego_layers();
    for (std::size_t i = 0; i < specs.size(); ++i) {
      json usage = json::array(), num_legos = json::array();
      for (auto* l : layers) {
        usage.push_back(l->route(static_cast<int>(i), step, false).legos);
        num_legos.push_back(l->num_legos_total());
      }
      metrics.write({{"step", step},
                     {"task", specs[i].config.name},
                     {"split", "routing"},
                     {"legos", usage},
                     {"num_legos", num_legos}});
    }
    return results;
  };

  auto t_window = Clock::now();
  std::vector<int> active;
  for (std::int64_t step = start_step; step < config.steps; ++step) {
    const float lr = schedule.lr_at(step);
    active.clear();
    for (std::size_t i = 0; i < specs.size(); ++i)
      if (specs[i].config.sampling_weight >= 1.0f || uniform(sampling[i]) < specs[i].config.sampling_weight)
        active.push_back(static_cast<int>(i));
    auto train_task = [&](int t) {
      const auto ti = static_cast<std::size_t>(t);
      io::Batch batch = loaders[ti]->next();
      if (D) batch = D->slice(batch);
      const TaskLoss loss = net.train_step(t, batch, step);
      GPPF_CHECK(std::isfinite(loss.total), "task '", specs[ti].config.name, "': the loss is ", loss.total, " at step ",
                 step, " (lr ", lr, "); lower optimizer.lr or check the data set ", specs[ti].config.dataset);
      // A replica's loss counts 1/replicas of the task's: scaled back, it estimates the whole batch's.
      const double scale = D ? D->layout().replicas : 1;
      Window& w = windows[ti];
      w.loss += loss.total * scale;
      for (const auto& [k, v] : loss.parts) w.parts[k] += v;
      ++w.steps;
      w.samples += batch.size() * static_cast<std::int64_t>(scale);
    };
    float balance = 0.0f;
    if (!D) {
      for (int t : active) train_task(t);
      balance = net.apply_balance(active);
    } else {
      dist::maybe_inject_fault(D->rank(), step);
      // Routers are replicated: rank 0 adds the regulariser's gradient (before the rounds, so that the
      // routers' all-reduces can start during the backward pass), the all-reduce spreads it.
      D->begin_step(active, step);
      if (root) balance = net.apply_balance(active);
      D->run_train_rounds(net, step, active, train_task);
      D->finish_step();
    }
    optimizer->step(lr, net.stream());

    const bool last = step + 1 == config.steps;
    if ((step + 1) % config.log_every == 0 || last) {
      const double dt = std::max(1e-9, seconds_since(t_window));
      const double elapsed = seconds_since(t_start);
      const double eta =
          elapsed / static_cast<double>(step + 1 - start_step) * static_cast<double>(config.steps - step - 1);
      std::string line = str("step ", step + 1, "/", config.steps, " lr ", fmt(lr, 5));
      std::vector<json> lines(specs.size());
      for (std::size_t i = 0; i < specs.size(); ++i) {
        Window& w = windows[i];
        if (w.steps == 0 || !reports(i)) continue;
        json j = {{"step", step + 1}, {"task", specs[i].config.name},
                  {"split", "train"}, {"loss", w.loss / static_cast<double>(w.steps)},
                  {"lr", lr},         {"samples_per_s", static_cast<double>(w.samples) / dt}};
        for (const auto& [k, v] : w.parts) j["loss_" + k] = v / static_cast<double>(w.steps);
        lines[i] = j;
      }
      for (auto& w : windows) w.clear();
      if (D) {
        json mine = json::object();
        for (std::size_t i = 0; i < specs.size(); ++i)
          if (!lines[i].is_null()) mine[std::to_string(i)] = lines[i];
        for (const auto& text : D->gather(mine.dump(), "the training log")) {
          const json part = json::parse(text);
          for (const auto& [k, v] : part.items()) lines[std::stoul(k)] = v;
        }
      }
      for (std::size_t i = 0; i < specs.size(); ++i) {
        json& j = lines[i];
        if (j.is_null()) continue;
        if (balance > 0) j["balance"] = balance;
        metrics.write(j);
        line += str(" | ", specs[i].config.name, " ", fmt(j["loss"].get<double>(), 3), " ",
                    fmt(j["samples_per_s"].get<double>(), 0), "/s");
      }
      line += str(" | eta ", fmt(eta, 0), " s");
      if (tty && root)
        std::fprintf(stderr, "\r%s\033[K", line.c_str());
      else if (root)
        log::info(line);
      t_window = Clock::now();
    }
    if (config.eval_every > 0 && (step + 1) % config.eval_every == 0 && !last) {
      if (tty && root) std::fprintf(stderr, "\n");
      const auto r = evaluate(step + 1, false);
      for (const auto& [task, m] : r)
        for (const auto& [k, v] : m)
          if (root) log::info("eval step ", step + 1, " ", task, " ", k, " ", fmt(v));
    }
    bool saved = false;
    // Ranks decide together: a timer is rank 0's, a signal counts when any rank got one.
    int timer_due = root && config.checkpoint_minutes > 0 && seconds_since(t_saved) >= 60.0 * config.checkpoint_minutes;
    int pending = signals.pending();
    if (D) {
      const std::vector<int> agreed = D->agree_max({timer_due, pending}, "the checkpoint timer and stop signals");
      timer_due = agreed[0];
      pending = agreed[1];
    }
    publish_async(false);
    if (!last && ((config.checkpoint_every > 0 && (step + 1) % config.checkpoint_every == 0) || timer_due)) {
      save(step + 1, true);
      saved = true;
    }
    if (pending != 0 && !last) {
      if (tty && root) std::fprintf(stderr, "\n");
      if (root)
        log::info("signal ", pending == SIGTERM ? "SIGTERM" : "SIGUSR1", ": checkpointing at step ", step + 1,
                  " and stopping (resume with --resume auto)");
      if (!saved) save(step + 1, false);
      publish_async(true);
      TrainSummary stopped;
      stopped.steps = step + 1;
      stopped.wall_seconds = seconds_since(t_start);
      stopped.interrupted = true;
      return stopped;
    }
  }
  if (tty && root) std::fprintf(stderr, "\n");

  if (D) {
    // Bytes this job moved per step, against the planner's prediction (docs/SCALING.md).
    const dist::CommStats st = D->stats();
    const std::int64_t steps_run = std::max<std::int64_t>(1, config.steps - start_step);
    json mine = {{"alltoall", st.alltoall_bytes}, {"allreduce", st.allreduce_bytes}, {"seconds", st.seconds}};
    double a2a = 0, ar = 0, wait = 0;
    for (const auto& text : D->gather(mine.dump(), "the communication statistics")) {
      const json part = json::parse(text);
      a2a += part["alltoall"].get<double>();
      ar += part["allreduce"].get<double>();
      wait = std::max(wait, part["seconds"].get<double>());
    }
    const TrafficEstimate e = D->estimate(net);
    if (root)
      log::info("communication per step (all ranks, training and evaluation): all-to-all ",
                fmt(a2a / steps_run / 1e6, 3), " MB, all-reduce ", fmt(ar / steps_run / 1e6, 3),
                " MB; predicted for a training step: ", fmt(e.alltoall_bytes / 1e6, 3), " MB and ",
                fmt(e.grad_payload_bytes / 1e6, 3), " MB; at most ", fmt(wait, 1), " s in collectives on one rank");
  }
  TrainSummary summary;
  summary.steps = config.steps;
  summary.metrics = evaluate(config.steps, true);
  save(config.steps, false);  // after the evaluation: its re-calibrated BN statistics are the ones to keep
  summary.wall_seconds = seconds_since(t_start);
  json s = {{"steps", summary.steps}, {"wall_seconds", summary.wall_seconds}, {"tasks", json::object()}};
  for (const auto& spec : specs) {
    json m = json::object();
    for (const auto& [k, v] : summary.metrics[spec.config.name]) m[k] = v;
    s["tasks"][spec.config.name] = {
        {"type", io::task_name(spec.config.type)}, {"dataset", spec.config.dataset}, {"metrics", m}};
  }
  if (!root) return summary;
  write_atomically(run_dir / "summary.json", s.dump(2) + "\n");

  std::printf("\n%-20s %-15s %-10s %s\n", "task", "type", "metric", "test");
  for (const auto& spec : specs)
    for (const auto& [k, v] : summary.metrics[spec.config.name])
      std::printf("%-20s %-15s %-10s %.4f\n", spec.config.name.c_str(), io::task_name(spec.config.type), k.c_str(), v);
  std::printf("%d steps in %.1f s; %s/summary.json\n", static_cast<int>(summary.steps), summary.wall_seconds,
              options.run_dir.c_str());
  return summary;
}

}  // namespace gppf::train
