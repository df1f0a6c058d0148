#include "src/report/chart.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "src/report/html.hpp"

namespace gppf::report {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string px(double v) { return fixed(v, 1); }

// Tick values at a step of 1, 2 or 5 x 10^k, about `target` of them, from the last tick at or below lo to the
// first at or above hi: an axis that ends on ticks has its whole range labelled.
std::vector<double> nice_ticks(double lo, double hi, int target) {
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag * 1.0001) {
      step = m * mag;
      break;
    }
  std::vector<double> ticks;
  const double first = std::floor(lo / step + 1e-9), last = std::ceil(hi / step - 1e-9);
  for (double k = first; k <= last; ++k) ticks.push_back(std::fabs(k) < 0.5 ? 0.0 : k * step);
  return ticks;
}

struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  std::vector<double> ticks;
  double map(double v, double a, double b) const {  // value -> pixel between a (lo) and b (hi)
    const double t = log ? (std::log10(v) - lo) / (hi - lo) : (v - lo) / (hi - lo);
    return a + t * (b - a);
  }
};

// Covers [lo, hi] and ends on ticks, but never past floor or ceil (bounds the data lie inside).
Axis linear_axis(double lo, double hi, int target, double floor = -kInf, double ceil = kInf) {
  if (!(hi > lo)) {
    const double pad = lo == 0 ? 1.0 : std::fabs(lo) * 0.1;
    lo = std::max(lo - pad, floor);
    hi = std::min(hi + pad, ceil);
  }
  Axis a;
  a.ticks = nice_ticks(lo, hi, target);
  const double eps = (hi - lo) * 1e-9;
  std::erase_if(a.ticks, [&](double t) { return t < floor - eps || t > ceil + eps; });
  a.lo = a.ticks.empty() ? lo : std::min(lo, a.ticks.front());
  a.hi = a.ticks.empty() ? hi : std::max(hi, a.ticks.back());
  return a;
}

Axis log_axis(double lo, double hi) {
  Axis a;
  a.log = true;
  a.lo = std::floor(std::log10(lo));
  a.hi = std::ceil(std::log10(hi));
  if (a.hi <= a.lo) a.hi = a.lo + 1;
  const bool fine = a.hi - a.lo <= 2;
  for (double e = a.lo; e <= a.hi; ++e)
    for (const double m : {1.0, 2.0, 5.0})
      if (m == 1.0 || (fine && e < a.hi)) a.ticks.push_back(m * std::pow(10.0, e));
  return a;
}

// Dash patterns for ChartOptions::dashed: the first series solid, the others each their own.
const char* dash(std::size_t i, bool dashed) {
  static const char* const kDashes[] = {"7 5", "2 4", "10 4 2 4", "4 2"};
  return dashed && i > 0 ? kDashes[(i - 1) % 4] : "";
}

// A legend entry: a short line drawn like the series (colour, dashes), then the name.
std::string swatch(const std::string& color, const std::string& dasharray, const std::string& name) {
  std::string out = "<span><svg width=\"24\" height=\"8\"><line x1=\"0\" y1=\"4\" x2=\"24\" y2=\"4\" stroke=\"" +
                    escape_html(color) + "\" stroke-width=\"3\"";
  if (!dasharray.empty()) out += " stroke-dasharray=\"" + dasharray + "\"";
  return out + "/></svg>" + escape_html(name) + "</span>";
}

std::string legend(const std::vector<Series>& series, const ChartOptions& o) {
  std::string out = "<div class=\"legend\">";
  for (std::size_t i = 0; i < series.size(); ++i)
    out += swatch(series[i].color.empty() ? palette(i) : series[i].color, dash(i, o.dashed), series[i].name);
  if (!o.x_marks.empty() && !o.x_marks_label.empty()) out += swatch("#888", "2 3", o.x_marks_label);
  return out + "</div>";
}

std::string figure(const std::string& title, const std::string& body, const std::string& note) {
  std::string out = "<figure><figcaption>" + escape_html(title) + "</figcaption>" + body;
  if (!note.empty()) out += "<p class=\"note\">" + escape_html(note) + "</p>";
  return out + "</figure>\n";
}

// Blues from near-white (0) to dark blue (1).
std::string shade(double v) {
  v = std::clamp(std::isfinite(v) ? v : 0.0, 0.0, 1.0);
  const double lo[3] = {239, 243, 250}, hi[3] = {8, 48, 107};
  char buf[16];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", static_cast<int>(std::lround(lo[0] + v * (hi[0] - lo[0]))),
                static_cast<int>(std::lround(lo[1] + v * (hi[1] - lo[1]))),
                static_cast<int>(std::lround(lo[2] + v * (hi[2] - lo[2]))));
  return buf;
}

// Long runs logged often have more points than pixels: keep the first, lowest, highest and last point
// of each pixel column, so spikes survive and the page stays small.
std::vector<std::pair<double, double>> decimate(const std::vector<std::pair<double, double>>& xy) {
  std::vector<std::pair<double, double>> out;
  std::size_t i = 0;
  while (i < xy.size()) {
    const double column = std::floor(xy[i].first);
    std::size_t j = i, lo = i, hi = i;
    for (; j < xy.size() && std::floor(xy[j].first) == column; ++j) {
      if (xy[j].second < xy[lo].second) lo = j;
      if (xy[j].second > xy[hi].second) hi = j;
    }
    std::size_t keep[4] = {i, std::min(lo, hi), std::max(lo, hi), j - 1};
    for (std::size_t k = 0; k < 4; ++k)
      if (k == 0 || keep[k] != keep[k - 1]) out.push_back(xy[keep[k]]);
    i = j;
  }
  return out;
}

}  // namespace

const char* palette(std::size_t i) {
  static const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                        "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return kColors[i % (sizeof kColors / sizeof kColors[0])];
}

std::string line_chart(const ChartOptions& o, const std::vector<Series>& series) {
  double x_lo = kInf, x_hi = -kInf, y_lo = kInf, y_hi = -kInf, y_pos_lo = kInf;
  bool all_positive = true;
  std::size_t points = 0;
  for (const auto& s : series)
    for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x_lo = std::min(x_lo, s.x[i]);
      x_hi = std::max(x_hi, s.x[i]);
      y_lo = std::min(y_lo, s.y[i]);
      y_hi = std::max(y_hi, s.y[i]);
      if (s.y[i] > 0) y_pos_lo = std::min(y_pos_lo, s.y[i]);
      all_positive = all_positive && s.y[i] > 0;
      ++points;
    }
  if (points == 0) return figure(o.title, "<p class=\"empty\">no data yet</p>", o.note);

  const bool log = o.y_scale == YScale::kLog    ? y_pos_lo < kInf
                   : o.y_scale == YScale::kAuto ? all_positive && y_hi > 30 * y_lo
                                                : false;
  Axis xa = linear_axis(x_lo, x_hi, 6);
  Axis ya;
  if (log) {
    ya = log_axis(y_pos_lo, y_hi);
  } else if (o.fit) {
    // Padding keeps the extreme points off the frame (except at a bound); a flat series gets 5% of its value.
    const double span = y_hi - y_lo;
    const double pad = span > 0 ? 0.08 * span : std::max(0.05 * std::fabs(y_hi), 1e-3);
    const double floor = y_lo >= o.y_floor ? o.y_floor : -kInf, ceil = y_hi <= o.y_ceil ? o.y_ceil : kInf;
    ya = linear_axis(std::max(y_lo - pad, floor), std::min(y_hi + pad, ceil), 5, floor, ceil);
  } else {
    ya = linear_axis(o.zero_based && y_lo >= 0 ? 0.0 : y_lo, y_hi, 5);
  }

  const double w = o.width, h = o.height;
  const double left = 72, right = w - 18, top = 12, bottom = h - 46;
  std::string svg = "<svg class=\"chart\" viewBox=\"0 0 " + px(w) + " " + px(h) + "\" width=\"" + px(w) +
                    "\" height=\"" + px(h) + "\" role=\"img\">";
  svg += "<rect class=\"plot\" x=\"" + px(left) + "\" y=\"" + px(top) + "\" width=\"" + px(right - left) +
         "\" height=\"" + px(bottom - top) + "\"/>";
  for (const double t : ya.ticks) {
    const double y = ya.map(t, bottom, top);
    svg += "<line class=\"grid\" x1=\"" + px(left) + "\" x2=\"" + px(right) + "\" y1=\"" + px(y) + "\" y2=\"" + px(y) +
           "\"/><text class=\"tick\" x=\"" + px(left - 6) + "\" y=\"" + px(y + 4) + "\" text-anchor=\"end\">" +
           short_number(t) + "</text>";
  }
  for (const double t : xa.ticks) {
    const double x = xa.map(t, left, right);
    svg += "<line class=\"grid\" x1=\"" + px(x) + "\" x2=\"" + px(x) + "\" y1=\"" + px(top) + "\" y2=\"" + px(bottom) +
           "\"/><text class=\"tick\" x=\"" + px(x) + "\" y=\"" + px(bottom + 16) + "\" text-anchor=\"middle\">" +
           short_number(t) + "</text>";
  }
  for (const double m : o.x_marks) {
    if (!(m >= xa.lo && m <= xa.hi)) continue;
    const double x = xa.map(m, left, right);
    svg += "<line class=\"mark\" x1=\"" + px(x) + "\" x2=\"" + px(x) + "\" y1=\"" + px(top) + "\" y2=\"" + px(bottom) +
           "\" stroke=\"#888\" stroke-dasharray=\"2 3\"/>";
  }
  svg += "<text class=\"label\" x=\"" + px((left + right) / 2) + "\" y=\"" + px(h - 8) + "\" text-anchor=\"middle\">" +
         escape_html(o.x_label) + "</text>";
  svg += "<text class=\"label\" transform=\"translate(16 " + px((top + bottom) / 2) +
         ") rotate(-90)\" text-anchor=\"middle\">" + escape_html(o.y_label + (log ? " (log scale)" : "")) + "</text>";

  for (std::size_t si = 0; si < series.size(); ++si) {
    const Series& s = series[si];
    const std::string color = escape_html(s.color.empty() ? palette(si) : s.color);
    std::vector<std::pair<double, double>> xy;  // in pixels
    for (std::size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (log && s.y[i] <= 0)) continue;
      xy.emplace_back(xa.map(s.x[i], left, right), ya.map(s.y[i], bottom, top));
    }
    if (xy.size() > 2 * static_cast<std::size_t>(right - left)) xy = decimate(xy);
    const std::size_t n = xy.size();
    std::string pts, dots;
    for (const auto& [x, y] : xy) {
      if (!pts.empty()) pts += ' ';
      pts += px(x);
      pts += ',';
      pts += px(y);
      if (n <= 40) dots += "<circle cx=\"" + px(x) + "\" cy=\"" + px(y) + "\" r=\"3\" fill=\"" + color + "\"/>";
    }
    if (n == 0) continue;
    const std::string dasharray = dash(si, o.dashed);
    svg += "<polyline class=\"series\" fill=\"none\" stroke=\"" + color + "\"" +
           (dasharray.empty() ? "" : " stroke-dasharray=\"" + dasharray + "\"") + " points=\"" + pts + "\"/>";
    svg += dots;
  }
  svg += "</svg>";
  return figure(o.title, svg + legend(series, o), o.note);
}

std::string heat_map(const HeatMapData& d) {
  const double cell_w = 64, cell_h = 30, head = 34;
  std::size_t longest = 4;
  for (const auto& r : d.rows) longest = std::max(longest, std::min<std::size_t>(r.size(), 32));
  const double label_w = std::clamp(static_cast<double>(longest) * 7.5 + 16, 80.0, 260.0);
  const double w = label_w + cell_w * static_cast<double>(d.columns.size()) + 8;
  const double grid_bottom = head + cell_h * static_cast<double>(d.rows.size());
  const double scale_top = grid_bottom + 24, scale_h = 10;  // the colour bar under the grid, its label above it
  const double h = scale_top + scale_h + 22;
  const std::string pattern = "hatch-" + escape_html(d.id), gradient = "scale-" + escape_html(d.id);
  std::string svg = "<svg class=\"heat\" viewBox=\"0 0 " + px(w) + " " + px(h) + "\" width=\"" + px(w) +
                    "\" height=\"" + px(h) + "\" role=\"img\"><defs><pattern id=\"" + pattern +
                    "\" width=\"8\" height=\"8\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">"
                    "<rect width=\"8\" height=\"8\" fill=\"#fff\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"8\" "
                    "stroke=\"#c44\" stroke-width=\"3\" opacity=\"0.45\"/></pattern><linearGradient id=\"" +
                    gradient + "\"><stop offset=\"0\" stop-color=\"" + shade(0) +
                    "\"/><stop offset=\"1\" stop-color=\"" + shade(1) + "\"/></linearGradient></defs>";
  for (std::size_t c = 0; c < d.columns.size(); ++c) {
    const double x = label_w + cell_w * (static_cast<double>(c) + 0.5);
    const bool unused = c < d.unused.size() && d.unused[c];
    svg += "<text class=\"col\" x=\"" + px(x) + "\" y=\"" + px(unused ? 14 : 22) + "\" text-anchor=\"middle\">" +
           escape_html(d.columns[c]) + "</text>";
    if (unused)
      svg +=
          "<text class=\"unused-label\" x=\"" + px(x) + "\" y=\"" + px(28) + "\" text-anchor=\"middle\">unused</text>";
  }
  for (std::size_t r = 0; r < d.rows.size(); ++r) {
    const double y = head + cell_h * static_cast<double>(r);
    std::string name = d.rows[r].size() <= 32 ? d.rows[r] : d.rows[r].substr(0, 31) + "~";
    svg += "<text class=\"row\" x=\"" + px(label_w - 8) + "\" y=\"" + px(y + cell_h / 2 + 4) +
           "\" text-anchor=\"end\"><title>" + escape_html(d.rows[r]) + "</title>" + escape_html(name) + "</text>";
    for (std::size_t c = 0; c < d.columns.size(); ++c) {
      const double x = label_w + cell_w * static_cast<double>(c);
      const double v = r < d.value.size() && c < d.value[r].size() ? d.value[r][c] : 0.0;
      const bool unused = c < d.unused.size() && d.unused[c];
      const bool mark = r < d.marked.size() && c < d.marked[r].size() && d.marked[r][c];
      svg += "<g class=\"cell\" data-row=\"" + escape_html(d.rows[r]) + "\" data-col=\"" + std::to_string(c) +
             "\" data-value=\"" + fixed(v, 3) + "\"><title>" + escape_html(d.rows[r]) + ", " +
             escape_html(d.columns[c]) + ": " + fixed(100 * v, 1) + "%" + (mark ? " (in the last record)" : "") +
             "</title><rect x=\"" + px(x + 1) + "\" y=\"" + px(y + 1) + "\" width=\"" + px(cell_w - 2) +
             "\" height=\"" + px(cell_h - 2) + "\" fill=\"" + (unused ? "url(#" + pattern + ")" : shade(v)) + "\"/>";
      svg += "<text x=\"" + px(x + cell_w / 2) + "\" y=\"" + px(y + cell_h / 2 + 4) + "\" text-anchor=\"middle\"" +
             (v > 0.55 ? " class=\"on-dark\"" : "") + ">" + fixed(100 * v, 0) + "%</text>";
      if (mark)
        svg += "<circle cx=\"" + px(x + cell_w - 8) + "\" cy=\"" + px(y + 8) + "\" r=\"3\" fill=\"" +
               (v > 0.55 ? "#fff" : "#08306b") + "\"/>";
      svg += "</g>";
    }
  }
  for (std::size_t c = 0; c < d.columns.size(); ++c)
    if (c < d.unused.size() && d.unused[c])
      svg += "<rect class=\"unused\" x=\"" + px(label_w + cell_w * static_cast<double>(c) + 1) + "\" y=\"" + px(head) +
             "\" width=\"" + px(cell_w - 2) + "\" height=\"" + px(cell_h * static_cast<double>(d.rows.size())) +
             "\" fill=\"none\" stroke=\"#c44\" stroke-dasharray=\"4 3\"/>";

  // The colour scale: shade() is linear in RGB, so a two-stop gradient is exactly the cells' colours.
  const double bar_w = std::min(192.0, std::max(cell_w, cell_w * static_cast<double>(d.columns.size()) - 16));
  svg += "<g class=\"scale\" data-min=\"0\" data-max=\"1\"><text class=\"scale-label\" x=\"" + px(label_w) + "\" y=\"" +
         px(scale_top - 6) + "\">" + escape_html(d.scale_label) + "</text><rect x=\"" + px(label_w) + "\" y=\"" +
         px(scale_top) + "\" width=\"" + px(bar_w) + "\" height=\"" + px(scale_h) + "\" fill=\"url(#" + gradient +
         ")\" stroke=\"#bbb\"/>";
  for (const double v : {0.0, 0.5, 1.0}) {
    const double x = label_w + v * bar_w;
    svg += "<line x1=\"" + px(x) + "\" x2=\"" + px(x) + "\" y1=\"" + px(scale_top + scale_h) + "\" y2=\"" +
           px(scale_top + scale_h + 3) + "\" stroke=\"#888\"/><text class=\"tick\" x=\"" + px(x) + "\" y=\"" +
           px(scale_top + scale_h + 15) + "\" text-anchor=\"" +
           (v == 0   ? "start"
            : v == 1 ? "end"
                     : "middle") +
           "\">" + fixed(100 * v, 0) + "%</text>";
  }
  svg += "</g></svg>";
  return figure(d.title, svg, d.note);
}

}  // namespace gppf::report
