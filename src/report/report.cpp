#include "src/report/report.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "core/error.hpp"
#include "src/report/chart.hpp"
#include "src/report/html.hpp"
#include "src/train/centernet.hpp"

namespace gppf::report {
namespace {

namespace fs = std::filesystem;

constexpr const char* kStyle = R"(
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#222;margin:24px auto;
max-width:1360px;padding:0 16px;background:#fff}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 10px;text-align:left;
vertical-align:top}th{background:#f4f6f8}td.num{font-variant-numeric:tabular-nums}
.facts td:first-child{color:#555}.note{color:#555;font-size:13px;margin:4px 0}figure .note{max-width:540px}.warn{background:#fff6dd;
border:1px solid #e8c96a;padding:6px 10px;border-radius:4px}
.grid2{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0;border:1px solid #e3e3e3;border-radius:6px;
padding:8px 10px;background:#fff}figcaption{font-weight:600;margin-bottom:4px;overflow-wrap:anywhere}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;fill:#333}
svg .tick{fill:#555;font-size:11px}svg .label{font-size:12px;fill:#333}
svg .plot{fill:#fcfcfd;stroke:#bbb}svg .grid{stroke:#e6e6e6}svg .series{stroke-width:2;stroke-linejoin:round}
svg .cell text.on-dark{fill:#fff}svg .unused-label{fill:#b22;font-size:11px;font-style:italic}svg.heat .cell text{font-size:12px}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;margin-top:2px}.legend svg{margin-right:5px;
vertical-align:middle}svg .scale-label{font-size:11px;fill:#555}
.empty{color:#888;font-style:italic;width:400px}code{background:#f4f6f8;padding:0 3px;border-radius:3px}
)";

std::string metrics_text(const std::map<std::string, double>& m) {
  std::string out;
  for (const auto& [k, v] : m) out += (out.empty() ? "" : ", ") + escape_html(k) + " " + fixed(v, 4);
  return out.empty() ? "&mdash;" : out;
}

// The last invocation of run.json: command, build, host, times and how it ended.
std::string record_rows(const nlohmann::json& record) {
  if (!record.is_object() || !record.contains("invocations") || !record["invocations"].is_array() ||
      record["invocations"].empty())
    return "<tr><td>run record</td><td>&mdash; (no run.json)</td></tr>";
  const nlohmann::json& e = record["invocations"].back();
  const auto text = [&](const nlohmann::json& j, const char* key) {
    if (!j.is_object() || !j.contains(key)) return std::string("?");
    return escape_html(j[key].is_string() ? j[key].get<std::string>() : j[key].dump());
  };
  const nlohmann::json gppf = e.contains("gppf") ? e["gppf"] : nlohmann::json();
  std::string out = "<tr><td>command</td><td><code>" + text(e, "command_line") + "</code></td></tr>";
  out += "<tr><td>gppf</td><td>" + text(gppf, "version") + " (git " + text(gppf, "git") + ", " +
         text(gppf, "build_type") + ")</td></tr>";
  out += "<tr><td>host, ranks</td><td>" + text(e, "host") + ", " + text(e, "ranks") + "</td></tr>";
  out += "<tr><td>status</td><td>" + text(e, "status") + " (exit " + text(e, "exit_code") + "), steps " +
         text(e, "start_step") + " to " + text(e, "end_step") + ", " + text(e, "start_time") + " to " +
         text(e, "end_time") + "; " + std::to_string(record["invocations"].size()) +
         " invocation(s); the resolved config is <code>config.yaml</code></td></tr>";
  return out;
}

std::string header(const ReportInput& in) {
  const RunLog& log = in.log;
  std::string out = "<h1>GPPF run report</h1>\n<table class=\"facts\">";
  out += "<tr><td>run directory</td><td><code>" + escape_html(in.run_dir) + "</code></td></tr>";
  if (in.summary) {
    out += "<tr><td>steps</td><td class=\"num\">" + std::to_string(in.summary->steps) + "</td></tr>";
    out += "<tr><td>wall time</td><td class=\"num\">" + fixed(in.summary->wall_seconds, 1) + " s</td></tr>";
  } else {
    out += "<tr><td>steps</td><td class=\"num\">" + std::to_string(log.last_step) + " so far</td></tr>";
    out += "<tr><td>wall time</td><td>&mdash; (no summary.json yet)</td></tr>";
  }
  out += "<tr><td>records</td><td class=\"num\">" + std::to_string(log.lines) +
         " lines of metrics.jsonl, eval split <code>" + escape_html(log.eval_split) + "</code></td></tr>";
  out += record_rows(in.record);
  if (!in.config.problem.empty())
    out += "<tr><td>config.yaml</td><td>" + escape_html(in.config.problem) +
           " (layers are numbered, and loss weights inferred, without it)</td></tr>";
  out += "</table>\n";

  out += "<h2>Summary</h2>\n";
  if (in.summary) {
    // summary.json's `metrics` are the test split's, read once at the end (periodic evaluations use val).
    out += "<table><tr><th>task</th><th>type</th><th>dataset</th><th>metrics (test, full pass at the end)</th></tr>";
    // summary.json's task object comes back sorted by name; show the tasks in the run's order.
    std::vector<const TaskSummary*> tasks;
    for (const auto& t : log.tasks)
      for (const auto& st : in.summary->tasks)
        if (st.name == t.name) tasks.push_back(&st);
    for (const auto& st : in.summary->tasks)
      if (!log.find(st.name)) tasks.push_back(&st);
    for (const TaskSummary* t : tasks)
      out += "<tr><td>" + escape_html(t->name) + "</td><td>" + escape_html(t->type) + "</td><td><code>" +
             escape_html(t->dataset) + "</code></td><td class=\"num\">" + metrics_text(t->metrics) + "</td></tr>";
    return out + "</table>\n";
  }
  out +=
      "<p class=\"warn\">summary.json is missing: the run is still going (or stopped before its end). "
      "The table shows each task's latest evaluation from metrics.jsonl; re-run <code>gppf report</code> "
      "when the run has finished.</p>";
  out += "<table><tr><th>task</th><th>latest eval step</th><th>metrics (" + escape_html(log.eval_split) +
         ", partial pass)</th></tr>";
  for (const auto& t : log.tasks) {
    if (t.eval.empty()) {
      out += "<tr><td>" + escape_html(t.name) + "</td><td>&mdash;</td><td>&mdash;</td></tr>";
      continue;
    }
    out += "<tr><td>" + escape_html(t.name) + "</td><td class=\"num\">" + std::to_string(t.eval.back().step) +
           "</td><td class=\"num\">" + metrics_text(t.eval.back().metrics) + "</td></tr>";
  }
  return out + "</table>\n";
}

// The weight of each logged loss part inside its task's loss, before the task's loss_weight: the trainer logs
// the parts unweighted; the total weighs them with centernet_part_weight (classification and
// segmentation have one part, "ce").
double part_weight(const std::string& part) { return train::centernet_part_weight(part); }

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

WeightedParts weigh_parts(const TaskLog& t, const RunConfig& config);

namespace {

std::string loss_section(const RunLog& log, const RunConfig& config) {
  std::string out = "<h2>Training loss</h2>\n";
  out +=
      "<p class=\"note\">Mean train loss of each logging window (<code>log_every</code> steps) against the step; "
      "the parts of a task's loss are drawn as weighted in its total, so they add up to it. The y axis turns "
      "logarithmic when the values span over 30x.</p>\n<div class=\"grid2\">";
  for (const auto& t : log.tasks) {
    const WeightedParts w = weigh_parts(t, config);
    std::vector<Series> series(1);
    series[0].name = "loss (total)";
    for (const auto& k : w.names) series.push_back(Series{k + " \u00d7 " + short_number(w.weight.at(k)), "", {}, {}});
    for (const auto& p : t.train) {
      series[0].x.push_back(static_cast<double>(p.step));
      series[0].y.push_back(p.loss);
      for (std::size_t i = 0; i < w.names.size(); ++i) {
        const auto it = p.parts.find(w.names[i]);
        series[i + 1].x.push_back(static_cast<double>(p.step));
        series[i + 1].y.push_back(it == p.parts.end() ? NAN : w.weight.at(w.names[i]) * it->second);
      }
    }
    ChartOptions o;
    o.title = "loss: " + t.name;
    o.x_label = "step";
    o.y_label = "train loss";
    o.y_scale = YScale::kAuto;
    if (!w.names.empty()) {
      std::string weights;
      for (const auto& [k, v] : w.weight)
        weights += (weights.empty() ? "" : ", ") + k + " \u00d7 " + short_number(part_weight(k));
      o.note = "Each part is loss_<part> \u00d7 its weight in the total (" + weights +
               ") \u00d7 the task's loss_weight " + short_number(w.loss_weight) +
               (w.loss_weight_from_config ? " (config.yaml)" : " (inferred: no config.yaml)") + "; ";
      o.note += w.largest_gap <= 1e-3
                    ? "the parts add up to the total."
                    : "the weighted parts differ from the total by up to " + fixed(100 * w.largest_gap, 1) +
                          "%: this run weighs its parts differently from what the report assumes.";
    } else if (w.weight.size() == 1 && w.loss_weight != 1) {
      o.note = "The total is loss_" + w.weight.begin()->first + " \u00d7 the task's loss_weight " +
               short_number(w.loss_weight) + (w.loss_weight_from_config ? " (config.yaml)." : " (inferred).");
    }
    out += line_chart(o, series);
  }
  return out + "</div>\n";
}

std::string metric_section(const RunLog& log) {
  std::string out = "<h2>Evaluation metrics</h2>\n";
  out += "<p class=\"note\">Metrics on the <code>" + escape_html(log.eval_split) +
         "</code> split at each evaluation (<code>eval_every</code> steps; <code>eval_batches</code> batches, the "
         "last one a full pass). The y axis spans the values shown, not 0 to 1: read its ticks.</p>\n<div "
         "class=\"grid2\">";
  for (const auto& t : log.tasks) {
    std::vector<std::string> names;
    for (const auto& p : t.eval)
      for (const auto& [k, v] : p.metrics)
        if (std::find(names.begin(), names.end(), k) == names.end()) names.push_back(k);
    std::vector<Series> series;
    for (const auto& k : names) {
      Series s{k, "", {}, {}};
      for (const auto& p : t.eval) {
        const auto it = p.metrics.find(k);
        if (it == p.metrics.end()) continue;
        s.x.push_back(static_cast<double>(p.step));
        s.y.push_back(it->second);
      }
      series.push_back(std::move(s));
    }
    ChartOptions o;
    o.title = "metrics: " + t.name;
    o.x_label = "step";
    o.y_label = log.eval_split + " metric";
    o.fit = true;  // a change from 0.91 to 0.93 is what matters, and it is invisible on 0..1
    o.y_floor = 0;
    o.y_ceil = 1;
    out += line_chart(o, series);
  }
  return out + "</div>\n";
}

std::string usage_section(const RunLog& log, const RunConfig& config) {
  std::string out = "<h2>Lego usage</h2>\n";
  std::size_t layers = 0;
  bool inferred = false;
  for (const auto& t : log.tasks)
    for (const auto& r : t.routing) {
      layers = std::max(layers, r.legos.size());
      if (r.num_legos.size() < r.legos.size()) inferred = true;
    }
  if (layers == 0) return out + "<p class=\"empty\">no routing records yet (they are written at each evaluation)</p>\n";

  std::size_t min_records = SIZE_MAX, max_records = 0;
  std::int64_t first_step = INT64_MAX, last_step = 0;
  for (const auto& t : log.tasks) {
    min_records = std::min(min_records, t.routing.size());
    max_records = std::max(max_records, t.routing.size());
    for (const auto& r : t.routing) {
      first_step = std::min(first_step, r.step);
      last_step = std::max(last_step, r.step);
    }
  }
  const std::string records = min_records == max_records
                                  ? std::to_string(max_records)
                                  : std::to_string(min_records) + " to " + std::to_string(max_records);
  out +=
      "<p class=\"note\">One grid per lego layer: a row per task, a column per lego. A cell shows the fraction of the "
      "task's " +
      records + " routing records (one per evaluation, steps " + std::to_string(first_step) + " to " +
      std::to_string(last_step) +
      ") in which the task routed through that lego; darker is more often. A dot marks the legos of the task's "
      "last record. A hatched column labelled <i>unused</i> is a lego no task routed through in any record.";
  // The records list layers in the backbone's order; config.yaml's stages give their names.
  const bool named = config.layers.size() == layers;
  if (!named)
    out += config.layers.empty()
               ? " Layers are numbered from 0: their names (stageS.blockB) come from the run's config.yaml, which "
                 "is missing here."
               : " Layers are numbered from 0: config.yaml's model has " + std::to_string(config.layers.size()) +
                     " lego layers, the records " + std::to_string(layers) + ".";
  if (inferred)
    out +=
        " The legos per layer are inferred from the highest index routed to, so unused legos after it are not "
        "shown.";
  out += "</p>\n<div class=\"grid2\">";

  for (std::size_t l = 0; l < layers; ++l) {
    int n_legos = 1;
    for (const auto& t : log.tasks)
      for (const auto& r : t.routing) {
        if (l < r.num_legos.size()) n_legos = std::max(n_legos, r.num_legos[l]);
        if (l < r.legos.size())
          for (int c : r.legos[l]) n_legos = std::max(n_legos, c + 1);
      }
    const auto nc = static_cast<std::size_t>(n_legos);
    HeatMapData d;
    d.title = named ? config.layers[l] : "layer " + std::to_string(l);
    d.scale_label = "share of the task's routing records";
    d.id = "L" + std::to_string(l);
    for (std::size_t c = 0; c < nc; ++c) d.columns.push_back("lego " + std::to_string(c));
    d.unused.assign(nc, true);
    for (const auto& t : log.tasks) {
      std::vector<double> count(nc, 0.0);
      std::vector<bool> mark(nc, false);
      for (std::size_t i = 0; i < t.routing.size(); ++i) {
        if (l >= t.routing[i].legos.size()) continue;
        std::set<int> seen(t.routing[i].legos[l].begin(), t.routing[i].legos[l].end());
        for (int c : seen) {
          count[static_cast<std::size_t>(c)] += 1;
          d.unused[static_cast<std::size_t>(c)] = false;
          if (i + 1 == t.routing.size()) mark[static_cast<std::size_t>(c)] = true;
        }
      }
      for (auto& v : count) v = t.routing.empty() ? 0.0 : v / static_cast<double>(t.routing.size());
      d.rows.push_back(t.name);
      d.value.push_back(std::move(count));
      d.marked.push_back(std::move(mark));
    }
    out += heat_map(d);
  }
  return out + "</div>\n";
}

std::string throughput_section(const RunLog& log) {
  std::string out = "<h2>Throughput and learning rate</h2>\n<div class=\"grid2\">";
  std::vector<Series> speed;
  std::map<std::int64_t, double> lr, balance, all_tasks;
  std::set<double> evals;
  std::int64_t last_train = 0;
  std::string medians;
  for (std::size_t i = 0; i < log.tasks.size(); ++i) {
    const TaskLog& t = log.tasks[i];
    Series s{t.name, palette(i), {}, {}};
    for (const auto& p : t.train) {
      if (p.samples_per_s) {
        s.x.push_back(static_cast<double>(p.step));
        s.y.push_back(*p.samples_per_s);
        if (std::isfinite(*p.samples_per_s)) all_tasks[p.step] += *p.samples_per_s;
      }
      if (p.lr) lr.emplace(p.step, *p.lr);
      if (p.balance) balance.emplace(p.step, *p.balance);
      last_train = std::max(last_train, p.step);
    }
    for (const auto& e : t.eval) evals.insert(static_cast<double>(e.step));
    if (!s.y.empty()) medians += (medians.empty() ? "" : ", ") + t.name + " " + fixed(median(s.y), 0);
    speed.push_back(std::move(s));
  }
  ChartOptions o;
  o.title = "images/s per task";
  o.x_label = "step";
  o.y_label = "images / s";
  o.zero_based = true;
  o.dashed = true;
  // The final evaluation comes after the last window and costs it nothing.
  for (const double e : evals)
    if (e < static_cast<double>(last_train)) o.x_marks.push_back(e);
  o.x_marks_label = "evaluation";
  std::vector<double> totals;
  for (const auto& [step, v] : all_tasks) totals.push_back(v);
  o.note =
      "Training images per second of each task over each logging window: the task's images in the window over "
      "the window's wall time, which all tasks share (every task trains in every step it is sampled for, so the "
      "lines differ by batch size and sampling_weight, and move together with the step time). A window after an "
      "evaluation (dotted) includes its time.";
  if (!medians.empty())
    o.note += " Median images/s: " + medians + "; all tasks together " + fixed(median(totals), 0) + ".";
  out += line_chart(o, speed);

  auto map_series = [](const std::string& name, const std::map<std::int64_t, double>& m) {
    Series s{name, "#444", {}, {}};
    for (const auto& [k, v] : m) {
      s.x.push_back(static_cast<double>(k));
      s.y.push_back(v);
    }
    return s;
  };
  o = ChartOptions();
  o.title = "learning rate";
  o.x_label = "step";
  o.y_label = "lr";
  o.zero_based = true;
  o.note = "The schedule's learning rate at the last step of each logging window.";
  out += line_chart(o, {map_series("lr", lr)});
  if (!balance.empty()) {
    o.title = "routing balance regulariser";
    o.y_label = "balance loss";
    o.note = "The usage-balance term of the routers at the last step of each logging window.";
    out += line_chart(o, {map_series("balance", balance)});
  }
  return out + "</div>\n";
}

}  // namespace

WeightedParts weigh_parts(const TaskLog& t, const RunConfig& config) {
  WeightedParts w;
  std::set<std::string> parts;
  for (const auto& p : t.train)
    for (const auto& [k, v] : p.parts) parts.insert(k);
  if (parts.empty()) return w;
  const auto sum = [&](const TrainPoint& p) {
    double total = 0;
    for (const auto& [k, v] : p.parts) total += part_weight(k) * v;
    return total;
  };
  if (const auto it = config.loss_weight.find(t.name); it != config.loss_weight.end()) {
    w.loss_weight = it->second;
    w.loss_weight_from_config = true;
  } else {  // no config.yaml: the factor that makes the parts add up, typically the same at every point
    std::vector<double> ratio;
    for (const auto& p : t.train)
      if (sum(p) > 0 && std::isfinite(p.loss)) ratio.push_back(p.loss / sum(p));
    if (!ratio.empty()) w.loss_weight = median(ratio);
  }
  for (const auto& k : parts) w.weight[k] = part_weight(k) * w.loss_weight;
  for (const auto& p : t.train)
    if (p.parts.size() == parts.size() && std::isfinite(p.loss) && p.loss != 0)
      w.largest_gap = std::max(w.largest_gap, std::fabs(w.loss_weight * sum(p) - p.loss) / std::fabs(p.loss));
  for (const auto& k : parts) {
    const bool equals_total = std::all_of(t.train.begin(), t.train.end(), [&](const TrainPoint& p) {
      const auto it = p.parts.find(k);
      return it != p.parts.end() && std::fabs(w.weight[k] * it->second - p.loss) <= 1e-5 * std::fabs(p.loss);
    });
    if (!equals_total) w.names.push_back(k);
  }
  return w;
}

std::string render_report(const ReportInput& in) {
  std::string title = "GPPF report: " + fs::path(in.run_dir).filename().string();
  if (fs::path(in.run_dir).filename().empty()) title = "GPPF report: " + in.run_dir;
  std::string out = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + escape_html(title) +
                    "</title><style>" + kStyle + "</style></head><body>\n";
  out += header(in);
  out += loss_section(in.log, in.config);
  out += metric_section(in.log);
  out += usage_section(in.log, in.config);
  out += throughput_section(in.log);
  out += "<p class=\"note\">Written by <code>gppf report</code>; a single file with no external references.</p>\n";
  return out + "</body></html>\n";
}

fs::path write_report(const fs::path& run_dir) {
  GPPF_CHECK(fs::is_directory(run_dir), run_dir.string(), ": not a directory (pass the --out folder of gppf train)");
  ReportInput in;
  in.run_dir = run_dir.string();
  in.log = read_metrics(run_dir / "metrics.jsonl");
  in.summary = read_summary(run_dir / "summary.json");
  if (std::ifstream record(run_dir / "run.json"); record) in.record = nlohmann::json::parse(record, nullptr, false);
  in.config = read_run_config(run_dir / "config.yaml");
  const std::string html = render_report(in);

  // Temporary file and rename: a browser refreshing the page never sees half a report.
  const fs::path path = run_dir / "report.html";
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc | std::ios::binary);
    GPPF_CHECK(out, tmp.string(), ": cannot write");
    out << html;
    out.flush();
    if (!out) {
      out.close();
      std::error_code ec;
      fs::remove(tmp, ec);
      GPPF_THROW(tmp.string(), ": write failed (disk full?)");
    }
  }
  fs::rename(tmp, path);
  return path;
}

}  // namespace gppf::report
