// gppf report: metrics.jsonl parsing and its errors, the HTML's charts and heat-map cells, layer names and
// loss weights from config.yaml, fitted axes, throughput, escaping, no external references, the atomic
// write, and the CLI end to end.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

#include "core/error.hpp"
#include "src/report/chart.hpp"
#include "src/report/html.hpp"
#include "src/report/report.hpp"

namespace gppf::report {
namespace {

namespace fs = std::filesystem;

// Two tasks, two lego layers of 4 legos; lego 3 is used by nobody in either layer, and in layer 0
// task "cls" routes through lego 1 in both of its records (100%) and through lego 0 in one (50%).
const char* kMetrics =
    R"({"step":10,"task":"cls","split":"train","loss":2.5,"loss_ce":2.5,"lr":0.1,"samples_per_s":100.0}
{"step":10,"task":"seg","split":"train","loss":1.5,"loss_ce":1.0,"loss_dice":0.5,"lr":0.1,"samples_per_s":20.0,"balance":0.01}
{"step":20,"task":"cls","split":"train","loss":1.25,"loss_ce":1.25,"lr":0.05,"samples_per_s":110.0}
{"step":20,"task":"seg","split":"train","loss":1.0,"loss_ce":0.75,"loss_dice":0.25,"lr":0.05,"samples_per_s":22.0,"balance":0.02}

{"step":20,"task":"cls","split":"test","samples":64,"top1":0.5,"top5":0.9}
{"step":20,"task":"seg","split":"test","samples":16,"miou":0.25,"pixel_acc":0.75}
{"step":20,"task":"cls","split":"routing","legos":[[0,1],[2,0]],"num_legos":[4,4]}
{"step":20,"task":"seg","split":"routing","legos":[[2,1],[1,2]],"num_legos":[4,4]}
{"step":30,"task":"cls","split":"train","loss":0.75,"loss_ce":0.75,"lr":0.0,"samples_per_s":105.0}
{"step":30,"task":"seg","split":"train","loss":0.8,"loss_ce":0.6,"loss_dice":0.2,"lr":0.0,"samples_per_s":21.0,"balance":0.015}
{"step":30,"task":"cls","split":"test","samples":640,"top1":0.75,"top5":0.95}
{"step":30,"task":"seg","split":"test","samples":160,"miou":0.375,"pixel_acc":0.875}
{"step":30,"task":"cls","split":"routing","legos":[[1,2],[0,2]],"num_legos":[4,4]}
{"step":30,"task":"seg","split":"routing","legos":[[2,1],[1,2]],"num_legos":[4,4]}
)";

const char* kSummary = R"({"steps":30,"wall_seconds":12.5,"tasks":{
 "cls":{"type":"classification","dataset":"/data/mnist","metrics":{"top1":0.75,"top5":0.95}},
 "seg":{"type":"segmentation","dataset":"/data/mnist-det","metrics":{"miou":0.375,"pixel_acc":0.875}}}})";

RunLog parse(const std::string& text) {
  std::istringstream in(text);
  return parse_metrics(in, "run/metrics.jsonl");
}

std::size_t count(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + needle.size())) ++n;
  return n;
}

std::string error_of(const std::string& text) {
  try {
    parse(text);
  } catch (const Error& e) {
    return e.reason();
  }
  return "(no error)";
}

// The resolved config of kMetrics' run: two lego layers, seg's loss weighted 2.
const char* kConfig = R"(model:
  backbone: gppf-mini
  stages:
    - [8, 1, 1]
    - [16, 1, 2]
tasks:
  - {name: cls, type: classification, dataset: /data/mnist, loss_weight: 1}
  - {name: seg, type: segmentation, dataset: /data/mnist-det, loss_weight: 1}
)";

// The <g class="cell" ...> element of one heat-map cell (layer: its figure's caption), up to its closing </g>.
std::string cell(const std::string& html, const std::string& layer, const std::string& row, int col) {
  std::size_t p = html.find("<figcaption>" + layer + "</figcaption>");
  if (p == std::string::npos) return "";
  p = html.find("<g class=\"cell\" data-row=\"" + row + "\" data-col=\"" + std::to_string(col) + "\"", p);
  if (p == std::string::npos) return "";
  return html.substr(p, html.find("</g>", p) - p);
}

// The <figure> whose caption is `caption`, up to its </figure>; empty when there is none.
std::string figure_of(const std::string& html, const std::string& caption) {
  const std::size_t p = html.find("<figure><figcaption>" + caption + "</figcaption>");
  if (p == std::string::npos) return "";
  return html.substr(p, html.find("</figure>", p) - p);
}

// The y axis' tick values of a line chart (its labels right-aligned left of the plot), bottom to top.
std::vector<double> y_ticks(const std::string& svg) {
  static const std::regex tick("<text class=\"tick\"[^>]*text-anchor=\"end\">([^<]*)</text>");
  std::vector<double> out;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), tick); it != std::sregex_iterator(); ++it)
    out.push_back(std::stod((*it)[1].str()));
  return out;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("gppf-report-test-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(reinterpret_cast<std::uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path / name) << text; }
  std::string read(const std::string& name) const {
    std::ifstream in(path / name);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
};

TEST(RunLog, ParsesTrainEvalAndRoutingRecords) {
  const RunLog log = parse(kMetrics);
  ASSERT_EQ(log.tasks.size(), 2u);
  EXPECT_EQ(log.tasks[0].name, "cls");
  EXPECT_EQ(log.tasks[1].name, "seg");
  EXPECT_EQ(log.eval_split, "test");
  EXPECT_EQ(log.last_step, 30);
  EXPECT_EQ(log.lines, 14u);
  const TaskLog& seg = log.tasks[1];
  ASSERT_EQ(seg.train.size(), 3u);
  EXPECT_DOUBLE_EQ(seg.train[1].parts.at("dice"), 0.25);
  EXPECT_DOUBLE_EQ(*seg.train[1].balance, 0.02);
  EXPECT_DOUBLE_EQ(*seg.train[2].samples_per_s, 21.0);
  ASSERT_EQ(seg.eval.size(), 2u);
  EXPECT_DOUBLE_EQ(seg.eval[1].metrics.at("miou"), 0.375);
  EXPECT_EQ(seg.eval[1].metrics.count("samples"), 0u);  // a count, not a metric
  ASSERT_EQ(log.tasks[0].routing.size(), 2u);
  EXPECT_EQ(log.tasks[0].routing[1].legos, (std::vector<std::vector<int>>{{1, 2}, {0, 2}}));
}

TEST(RunLog, GarbledLinesNameTheFileAndLine) {
  std::string text = kMetrics;
  // Line 3 cut in half, as if the disk filled up.
  const auto third = text.find('\n', text.find('\n') + 1) + 1;
  std::string garbled = text.substr(0, third) + "{\"step\":20,\"task\":\"cls\",\"spl\n";
  std::string e = error_of(garbled);
  EXPECT_NE(e.find("run/metrics.jsonl line 3"), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << "one line: " << e;

  e = error_of("{\"step\":1,\"task\":\"a\",\"split\":\"train\",\"loss\":1}\n\n{\"task\":\"a\",\"split\":\"train\"}\n");
  EXPECT_NE(e.find("line 3"), std::string::npos) << e;  // blank lines still count
  EXPECT_NE(e.find("step"), std::string::npos) << e;
  e = error_of("{\"step\":1,\"task\":\"a\",\"split\":\"train\",\"lr\":0.1}\n");
  EXPECT_NE(e.find("line 1"), std::string::npos) << e;
  EXPECT_NE(e.find("loss"), std::string::npos) << e;
  e = error_of("{\"step\":1,\"task\":\"a\",\"split\":\"routing\",\"legos\":[[0,\"x\"]]}\n");
  EXPECT_NE(e.find("line 1"), std::string::npos) << e;
  e = error_of("[1,2]\n");
  EXPECT_NE(e.find("not a JSON object"), std::string::npos) << e;
  EXPECT_EQ(error_of(""), "(no error)");
}

TEST(Report, HasOneCurvePerSeriesAndOneCellPerTaskAndLego) {
  ReportInput in{"/runs/a", parse(kMetrics), parse_summary(kSummary, "summary.json")};
  const std::string html = render_report(in);
  // Loss: cls (total; its only part, ce, equals it and is left out) + seg (total, ce, dice); metrics:
  // 2 + 2; throughput: 2; lr: 1; balance: 1.
  EXPECT_EQ(count(html, "<polyline class=\"series\""), 4u + 4u + 2u + 1u + 1u);
  EXPECT_EQ(count(html, ">ce \u00d7 1</span>"), 1u);
  EXPECT_EQ(count(html, "stroke-dasharray=\"7 5\" points="), 1u);  // the second task's throughput
  EXPECT_EQ(count(html, "<figure>"), 2u + 2u + 2u + 3u);
  // 2 layers x 2 tasks x 4 legos.
  EXPECT_EQ(count(html, "<g class=\"cell\""), 16u);
  // Lego 3 is never used in either layer; every other lego is.
  EXPECT_EQ(count(html, "<rect class=\"unused\""), 2u);
  EXPECT_EQ(count(html, ">unused</text>"), 2u);

  const std::string full = cell(html, "layer 0", "cls", 1);
  EXPECT_NE(full.find("data-value=\"1.000\""), std::string::npos) << full;
  EXPECT_NE(full.find("class=\"on-dark\">100%</text>"), std::string::npos) << "white text: " << full;
  EXPECT_NE(full.find("fill=\"#08306b\""), std::string::npos) << "darkest shade: " << full;
  EXPECT_NE(full.find("<circle"), std::string::npos) << "lego 1 is in cls's last record: " << full;
  const std::string half = cell(html, "layer 0", "cls", 0);
  EXPECT_NE(half.find(">50%</text>"), std::string::npos) << half;
  EXPECT_EQ(half.find("<circle"), std::string::npos) << "lego 0 is not in cls's last record: " << half;
  const std::string none = cell(html, "layer 1", "seg", 0);
  EXPECT_NE(none.find(">0%</text>"), std::string::npos) << none;
  EXPECT_NE(none.find("fill=\"#eff3fa\""), std::string::npos) << "lightest shade: " << none;
  EXPECT_NE(cell(html, "layer 1", "seg", 3).find("url(#hatch-L1)"), std::string::npos);

  // Summary table, header facts.
  EXPECT_NE(html.find("<td>classification</td>"), std::string::npos);
  EXPECT_NE(html.find("top1 0.7500, top5 0.9500"), std::string::npos);
  EXPECT_NE(html.find("12.5 s"), std::string::npos);
  EXPECT_EQ(html.find("summary.json is missing"), std::string::npos);
}

TEST(Report, InfersTheLegoCountWithoutNumLegos) {
  std::string text = kMetrics;
  for (auto p = text.find(",\"num_legos\":[4,4]"); p != std::string::npos; p = text.find(",\"num_legos\":[4,4]"))
    text.erase(p, std::string(",\"num_legos\":[4,4]").size());
  ReportInput in{"/runs/a", parse(text), std::nullopt};
  const std::string html = render_report(in);
  EXPECT_EQ(count(html, "<g class=\"cell\""), 2u * 2u * 3u);  // legos 0-2: the highest index routed to is 2
  EXPECT_NE(html.find("inferred from the highest index"), std::string::npos);
}

TEST(Report, ShowsTheRunRecord) {
  ReportInput in{"/runs/a", parse(kMetrics), parse_summary(kSummary, "summary.json")};
  EXPECT_NE(render_report(in).find("(no run.json)"), std::string::npos);
  in.record = nlohmann::json::parse(R"({"config": "config.yaml", "invocations": [
    {"command_line": "gppf train --config <x>.yaml", "gppf": {"version": "0.1.0", "git": "abc1234",
     "build_type": "Release"}, "host": "node7", "ranks": 4, "start_step": 0, "end_step": 4500,
     "start_time": "2026-12-06T10:00:00Z", "end_time": "2026-12-06T10:10:00Z", "status": "finished",
     "exit_code": 0}]})");
  const std::string html = render_report(in);
  EXPECT_NE(html.find("gppf train --config &lt;x&gt;.yaml"), std::string::npos);
  EXPECT_NE(html.find("git abc1234, Release"), std::string::npos);
  EXPECT_NE(html.find("node7, 4"), std::string::npos);
  EXPECT_NE(html.find("finished (exit 0), steps 0 to 4500"), std::string::npos);
}

TEST(Report, SummaryFollowsTheRunsTaskOrder) {
  const std::string text =
      "{\"step\":1,\"task\":\"seg\",\"split\":\"train\",\"loss\":1}\n"
      "{\"step\":1,\"task\":\"cls\",\"split\":\"train\",\"loss\":1}\n";
  ReportInput in{"/runs/a", parse(text), parse_summary(kSummary, "summary.json")};
  const std::string html = render_report(in);
  ASSERT_NE(html.find("<td>cls</td>"), std::string::npos);
  EXPECT_LT(html.find("<td>seg</td>"), html.find("<td>cls</td>"));
}

TEST(Report, AxesHaveTicksAndLabels) {
  ChartOptions o;
  o.title = "t";
  o.x_label = "step";
  o.y_label = "loss";
  const std::string svg = line_chart(o, {Series{"a", "", {0, 50, 100}, {0.5, 1.5, 2.5}}});
  EXPECT_GE(count(svg, "class=\"tick\""), 6u);
  EXPECT_NE(svg.find(">step</text>"), std::string::npos);
  EXPECT_NE(svg.find(">loss</text>"), std::string::npos);
  EXPECT_NE(svg.find(">100</text>"), std::string::npos) << "an x tick at 100: " << svg;
  // A wide positive range goes logarithmic under kAuto, with decade ticks.
  o.y_scale = YScale::kAuto;
  const std::string log_svg = line_chart(o, {Series{"a", "", {0, 1, 2}, {100, 1, 0.01}}});
  EXPECT_NE(log_svg.find("(log scale)"), std::string::npos);
  EXPECT_NE(log_svg.find(">0.01</text>"), std::string::npos) << log_svg;
  // More points than pixels: thinned per pixel column, keeping the extremes.
  Series many{"m", "", {}, {}};
  for (int i = 0; i < 100000; ++i) {
    many.x.push_back(i);
    many.y.push_back(i == 51234 ? 50.0 : 1.0 + 1e-5 * i);
  }
  const std::string big = line_chart(ChartOptions(), {many});
  EXPECT_LT(big.size(), 60000u);
  EXPECT_EQ(count(big, "<circle"), 0u);
  EXPECT_NE(big.find(">50</text>"), std::string::npos) << "the spike sets the y range";
  const auto pts = big.substr(big.find("points=\""));
  EXPECT_NE(pts.find(",12.0"), std::string::npos) << "the spike's point (at the top) is kept";
  // Nothing to draw: a note instead of an empty axis.
  EXPECT_NE(line_chart(o, {Series{"a", "", {}, {}}}).find("no data yet"), std::string::npos);
}

TEST(Report, NamesLayersByStageAndBlock) {
  RunConfig c = parse_run_config(kConfig, "config.yaml");
  EXPECT_EQ(c.problem, "");
  EXPECT_EQ(c.layers, (std::vector<std::string>{"stage1.block0", "stage2.block0"}));
  // As src/nn/backbone.cpp names them: stages from 1, blocks from 0; a preset's stages without `stages`.
  EXPECT_EQ(parse_run_config("model: {stages: [[8, 1, 1], [16, 2, 2]]}", "c").layers,
            (std::vector<std::string>{"stage1.block0", "stage2.block0", "stage2.block1"}));
  const RunConfig r50 = parse_run_config("model: {backbone: gppf-r50}", "c");
  ASSERT_EQ(r50.layers.size(), 16u);
  EXPECT_EQ(r50.layers[3], "stage2.block0");
  EXPECT_EQ(r50.layers.back(), "stage4.block2");
  EXPECT_NE(parse_run_config("model: [oops", "run/config.yaml").problem.find("run/config.yaml"), std::string::npos);

  ReportInput in{"/runs/a", parse(kMetrics), parse_summary(kSummary, "summary.json")};
  in.config = c;
  std::string html = render_report(in);
  EXPECT_NE(html.find("<figcaption>stage1.block0</figcaption>"), std::string::npos);
  EXPECT_NE(html.find("<figcaption>stage2.block0</figcaption>"), std::string::npos);
  EXPECT_EQ(html.find("<figcaption>layer "), std::string::npos);
  EXPECT_NE(cell(html, "stage1.block0", "cls", 1).find("data-value=\"1.000\""), std::string::npos);
  // A config whose model does not match the records: numbered layers, and a note that says why.
  in.config = parse_run_config("model: {stages: [[8, 3, 1]]}", "c");
  html = render_report(in);
  EXPECT_NE(html.find("<figcaption>layer 1</figcaption>"), std::string::npos);
  EXPECT_NE(html.find("config.yaml's model has 3 lego layers, the records 2"), std::string::npos);
}

TEST(Report, HeatMapsHaveAColourScale) {
  ReportInput in{"/runs/a", parse(kMetrics), parse_summary(kSummary, "summary.json")};
  const std::string html = render_report(in);
  EXPECT_EQ(count(html, "<g class=\"scale\" data-min=\"0\" data-max=\"1\">"), 2u);  // one per layer
  const std::string map = figure_of(html, "layer 1");
  const std::string scale = map.substr(map.find("<g class=\"scale\""));
  EXPECT_NE(scale.find(">0%</text>"), std::string::npos) << scale;
  EXPECT_NE(scale.find(">100%</text>"), std::string::npos) << scale;
  EXPECT_NE(scale.find("fill=\"url(#scale-L1)\""), std::string::npos) << scale;
  // The bar runs through the cells' own shades: the lightest (0%) to the darkest (100%).
  EXPECT_NE(map.find("<linearGradient id=\"scale-L1\"><stop offset=\"0\" stop-color=\"#eff3fa\"/><stop "
                     "offset=\"1\" stop-color=\"#08306b\"/>"),
            std::string::npos)
      << map;
}

TEST(Report, MetricAxesFitTheData) {
  ChartOptions o;
  o.fit = true;
  o.y_floor = 0;
  o.y_ceil = 1;
  std::vector<double> t = y_ticks(line_chart(o, {Series{"top1", "", {0, 1, 2}, {0.91, 0.93, 0.95}}}));
  ASSERT_GE(t.size(), 3u);
  EXPECT_TRUE(std::is_sorted(t.begin(), t.end()));
  EXPECT_LE(t.front(), 0.91);  // the axis ends on labelled ticks around the data
  EXPECT_GE(t.back(), 0.95);
  EXPECT_GT(t.front(), 0.85);  // and not on 0..1, where 0.91 to 0.95 is a flat line
  EXPECT_LT(t.back(), 0.99);
  // Never past the bounds the data respect: an accuracy axis stops at 1.
  t = y_ticks(line_chart(o, {Series{"top1", "", {0, 1}, {0.6, 1.0}}}));
  EXPECT_DOUBLE_EQ(t.back(), 1.0);
  EXPECT_GE(t.front(), 0.5);
  t = y_ticks(line_chart(o, {Series{"flat", "", {0, 1}, {1.0, 1.0}}}));
  EXPECT_DOUBLE_EQ(t.back(), 1.0);
  EXPECT_LT(t.front(), 1.0);
  // Data outside the bounds are shown whole.
  t = y_ticks(line_chart(o, {Series{"loss", "", {0, 1}, {0.5, 1.5}}}));
  EXPECT_GE(t.back(), 1.5);
  // The report's metric charts: cls's top1/top5 span 0.5 to 0.95.
  ReportInput in{"/runs/a", parse(kMetrics), parse_summary(kSummary, "summary.json")};
  t = y_ticks(figure_of(render_report(in), "metrics: cls"));
  ASSERT_FALSE(t.empty());
  EXPECT_GT(t.front(), 0.0);
  EXPECT_LE(t.front(), 0.5);
  EXPECT_DOUBLE_EQ(t.back(), 1.0);
}

TEST(Report, ThroughputPerTask) {
  ReportInput in{"/runs/a", parse(kMetrics), parse_summary(kSummary, "summary.json")};
  const std::string fig = figure_of(render_report(in), "images/s per task");
  ASSERT_FALSE(fig.empty());
  EXPECT_EQ(count(fig, "<polyline class=\"series\""), 2u);  // one per task
  EXPECT_NE(fig.find("</svg>cls</span>"), std::string::npos) << fig;
  EXPECT_NE(fig.find("</svg>seg</span>"), std::string::npos) << fig;
  // cls: 100, 110, 105 images/s at steps 10, 20, 30; the points lie on the line.
  const std::string cls = fig.substr(fig.find("<polyline class=\"series\""));
  EXPECT_EQ(count(cls.substr(0, cls.find("<polyline", 1)), "<circle"), 3u);
  EXPECT_NE(fig.find("images / s"), std::string::npos);
  // The evaluation at step 20 falls inside the run (its time counts in the next window); the one at the
  // last step does not.
  EXPECT_EQ(count(fig, "<line class=\"mark\""), 1u);
  EXPECT_NE(fig.find("</svg>evaluation</span>"), std::string::npos);
  EXPECT_NE(fig.find("Median images/s: cls 105, seg 21; all tasks together 126."), std::string::npos) << fig;
}

TEST(Report, LossPartsAreWeightedAsInTheTotal) {
  // A detection task: loss = loss_weight x (heatmap + 0.1 size + offset), as src/train/network.cpp sums it.
  const std::string text =
      "{\"step\":10,\"task\":\"det\",\"split\":\"train\",\"loss\":3.6,\"loss_heatmap\":1.0,"
      "\"loss_size\":3.0,\"loss_offset\":0.5}\n"
      "{\"step\":20,\"task\":\"det\",\"split\":\"train\",\"loss\":2.200002,\"loss_heatmap\":0.6,"
      "\"loss_size\":2.0,\"loss_offset\":0.3}\n"
      "{\"step\":20,\"task\":\"seg\",\"split\":\"train\",\"loss\":3.0,\"loss_ce\":1.5}\n";
  const RunLog log = parse(text);
  const RunConfig config = parse_run_config(
      "tasks:\n  - {name: det, type: detection, loss_weight: 2}\n  - {name: seg, type: segmentation, "
      "loss_weight: 2}\n",
      "config.yaml");
  const WeightedParts w = weigh_parts(log.tasks[0], config);
  EXPECT_TRUE(w.loss_weight_from_config);
  EXPECT_DOUBLE_EQ(w.loss_weight, 2.0);
  EXPECT_NEAR(w.weight.at("size"), 0.2, 1e-7);  // 2 x the trainer's 0.1f
  EXPECT_DOUBLE_EQ(w.weight.at("heatmap"), 2.0);
  EXPECT_EQ(w.names.size(), 3u);
  for (const TrainPoint& p : log.tasks[0].train) {
    double sum = 0;
    for (const auto& [k, v] : p.parts) sum += w.weight.at(k) * v;
    EXPECT_NEAR(sum, p.loss, 1e-5 * p.loss) << "step " << p.step;
  }
  EXPECT_LT(w.largest_gap, 1e-5);
  // Without config.yaml the loss weight is what makes the parts add up.
  const WeightedParts guess = weigh_parts(log.tasks[0], RunConfig());
  EXPECT_FALSE(guess.loss_weight_from_config);
  EXPECT_NEAR(guess.loss_weight, 2.0, 1e-5);

  ReportInput in{"/runs/a", log, std::nullopt};
  in.config = config;
  std::string html = render_report(in);
  const std::string det = figure_of(html, "loss: det");
  EXPECT_NE(det.find("</svg>size \u00d7 0.2</span>"), std::string::npos) << det;
  EXPECT_NE(det.find("</svg>heatmap \u00d7 2</span>"), std::string::npos) << det;
  EXPECT_NE(det.find("the parts add up to the total."), std::string::npos) << det;
  EXPECT_NE(det.find("size \u00d7 0.1"), std::string::npos) << "the part's own weight in the caption";
  EXPECT_EQ(count(det, "<polyline class=\"series\""), 4u);
  // seg's one part x 2 is its total: drawn once, and the caption says so.
  const std::string seg = figure_of(html, "loss: seg");
  EXPECT_EQ(count(seg, "<polyline class=\"series\""), 1u);
  EXPECT_NE(seg.find("The total is loss_ce \u00d7 the task&#39;s loss_weight 2 (config.yaml)."), std::string::npos)
      << seg;
  // Parts that do not add up under the assumed weights are called out, not hidden.
  in.config = parse_run_config("tasks:\n  - {name: det, loss_weight: 1}\n", "config.yaml");
  EXPECT_NE(figure_of(render_report(in), "loss: det").find("differ from the total by up to 50.0%"), std::string::npos);
}

TEST(Report, EscapesEverythingFromTheFiles) {
  const std::string evil = "a<b&\\\"c\\\"";  // the JSON for a<b&"c"
  std::string text = std::string("{\"step\":1,\"task\":\"") + evil +
                     "\",\"split\":\"train\",\"loss\":1,\"loss_<i>\":1,\"lr\":0.1,\"samples_per_s\":5}\n" +
                     "{\"step\":1,\"task\":\"" + evil + "\",\"split\":\"test\",\"<script>\":0.5}\n" +
                     "{\"step\":1,\"task\":\"" + evil + "\",\"split\":\"routing\",\"legos\":[[0]]}\n";
  const std::string summary = std::string("{\"steps\":1,\"wall_seconds\":1,\"tasks\":{\"") + evil +
                              "\":{\"type\":\"<b>\",\"dataset\":\"x&y\",\"metrics\":{}}}}";
  ReportInput in{"/runs/<dir>", parse(text), parse_summary(summary, "summary.json")};
  const std::string html = render_report(in);
  EXPECT_EQ(html.find("a<b&\"c\""), std::string::npos);
  EXPECT_NE(html.find("a&lt;b&amp;&quot;c&quot;"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<i>\""), std::string::npos);
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_EQ(html.find("/runs/<dir>"), std::string::npos);
  EXPECT_NE(html.find("x&amp;y"), std::string::npos);
  EXPECT_EQ(escape_html("<&>\"'"), "&lt;&amp;&gt;&quot;&#39;");
}

TEST(Report, SelfContained) {
  ReportInput in{"/runs/a", parse(kMetrics), parse_summary(kSummary, "summary.json")};
  const std::string html = render_report(in);
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  // Every url(...) is a reference into the page itself.
  const std::regex url("url\\(([^)]*)\\)");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), url); it != std::sregex_iterator(); ++it)
    EXPECT_EQ((*it)[1].str().rfind("#", 0), 0u) << (*it)[0].str();
}

TEST(Report, WritesWithoutSummaryWhileTheRunIsGoing) {
  TempDir dir;
  const std::string text = kMetrics;
  dir.write("metrics.jsonl", text.substr(0, text.find("{\"step\":30")));
  const fs::path path = write_report(dir.path);
  EXPECT_EQ(path, dir.path / "report.html");
  const std::string html = dir.read("report.html");
  EXPECT_NE(html.find("summary.json is missing"), std::string::npos);
  EXPECT_NE(html.find("20 so far"), std::string::npos);
  EXPECT_NE(html.find("top1 0.5000, top5 0.9000"), std::string::npos) << "the latest eval stands in";
  EXPECT_EQ(count(html, "<g class=\"cell\""), 2u * 2u * 4u);
  for (const auto& e : fs::directory_iterator(dir.path))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

TEST(Report, ErrorsNameTheFile) {
  TempDir dir;
  try {
    write_report(dir.path);
    FAIL() << "no metrics.jsonl";
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("metrics.jsonl"), std::string::npos) << e.reason();
  }
  dir.write("metrics.jsonl", kMetrics);
  dir.write("summary.json", "{\"steps\": 30, \"tasks\": {");
  try {
    write_report(dir.path);
    FAIL() << "garbled summary.json";
  } catch (const Error& e) {
    EXPECT_NE(e.reason().find("summary.json"), std::string::npos) << e.reason();
  }
  EXPECT_FALSE(fs::exists(dir.path / "report.html"));
}

TEST(Report, CommandLine) {
  TempDir dir;
  dir.write("metrics.jsonl", kMetrics);
  dir.write("summary.json", kSummary);
  const std::string cmd = std::string(GPPF_BINARY) + " report " + dir.path.string() + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int st = pclose(p);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << out;
  EXPECT_NE(out.find("report.html"), std::string::npos) << out;
  EXPECT_NE(dir.read("report.html").find("<g class=\"cell\""), std::string::npos);
  dir.write("config.yaml", kConfig);
  p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  while (fgets(buf, sizeof buf, p)) out += buf;
  EXPECT_EQ(pclose(p), 0) << out;
  EXPECT_NE(dir.read("report.html").find("<figcaption>stage2.block0</figcaption>"), std::string::npos);

  dir.write("metrics.jsonl", std::string(kMetrics) + "{oops\n");
  p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  out.clear();
  while (fgets(buf, sizeof buf, p)) out += buf;
  EXPECT_NE(pclose(p), 0);
  EXPECT_NE(out.find("metrics.jsonl line 16"), std::string::npos) << out;
}

}  // namespace
}  // namespace gppf::report
