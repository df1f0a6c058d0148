#pragma once
// Inline-SVG charts for the run report: line charts with axes, ticks and a legend, and heat maps.
// Every function returns a self-contained <figure> (no scripts, no external references).
#include <limits>
#include <string>
#include <vector>

namespace gppf::report {

struct Series {
  std::string name;   // legend text (escaped here)
  std::string color;  // CSS colour; empty: the palette colour of the series' position
  std::vector<double> x, y;
};

enum class YScale { kLinear, kLog, kAuto };  // kAuto: log when every y > 0 and they span over 30x

struct ChartOptions {
  std::string title, x_label, y_label, note;  // note: a line under the chart (escaped here)
  YScale y_scale = YScale::kLinear;
  bool zero_based = false;  // linear y axis starts at 0 (when the data are >= 0)
  // Linear y axis fitted to the data: their min..max padded by 8% of the span, kept inside [y_floor, y_ceil]
  // when the data are (0..1 for accuracies: the axis never shows an impossible 1.05), ends on ticks.
  bool fit = false;
  double y_floor = -std::numeric_limits<double>::infinity(), y_ceil = std::numeric_limits<double>::infinity();
  bool dashed = false;  // every series after the first has a dash pattern of its own, so equal series stay visible
  std::vector<double> x_marks;  // dotted vertical lines at these x (e.g. evaluation steps)
  std::string x_marks_label;    // their legend text
  int width = 540, height = 280;
};

// One <polyline class="series"> per series with at least one finite point; points that are not finite
// (or not positive on a log axis) are left out. Series with few points also get circle markers.
std::string line_chart(const ChartOptions& options, const std::vector<Series>& series);

struct HeatMapData {
  std::string title, note, id;  // id: unique in the page (names the hatch pattern and the colour scale)
  std::vector<std::string> rows, columns;
  std::vector<std::vector<double>> value;  // rows x columns, in [0, 1]
  std::vector<std::vector<bool>> marked;   // rows x columns: drawn with a dot (e.g. "in the last record")
  std::vector<bool> unused;                // per column: no row ever used it (hatched, labelled "unused")
  std::string scale_label = "share";       // text beside the colour scale
};

// A grid of <g class="cell"> (one per row x column), shaded by value and labelled with a percentage, and under
// it a <g class="scale"> colour bar from 0% to 100%.
std::string heat_map(const HeatMapData& data);

// The palette colour for index i (10 colours, then repeats).
const char* palette(std::size_t i);

}  // namespace gppf::report
