// SVG rendering of line charts. Coordinates are computed in data space, mapped to a fixed
// plot area, and written with two decimals; text is XML-escaped.
#include "loadtest/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace taskmoe::loadtest {
namespace {

// Layout in pixels: the plot area sits inside margins that hold tick labels, axis labels,
// the title and, on the right, the legend.
constexpr double kWidth = 760, kHeight = 440;
constexpr double kLeft = 80, kRight = 190, kTop = 44, kBottom = 62;
constexpr double kPlotWidth = kWidth - kLeft - kRight;
constexpr double kPlotHeight = kHeight - kTop - kBottom;
constexpr int kMaxLogTicks = 12;

// Distinguishable on white and for the common forms of colour blindness (Okabe-Ito).
constexpr const char* kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                   "#E69F00", "#56B4E9", "#000000", "#F0E442"};

std::string FormatNumber(double v) {
  if (v == 0) return "0";
  const double a = std::abs(v);
  if (a >= 1e6) return absl::StrFormat("%.3gM", v / 1e6);
  if (a >= 1e4) return absl::StrFormat("%.3gk", v / 1e3);
  return absl::StrFormat("%.4g", v);
}

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void Add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  bool empty() const { return lo > hi; }
};

}  // namespace

std::string XmlEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::vector<double> NiceTicks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || target < 1) return {};
  if (hi < lo) std::swap(lo, hi);
  double span = hi - lo;
  if (span <= 0) span = lo != 0 ? std::abs(lo) : 1.0;
  const double raw = span / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double normalized = raw / magnitude;
  const double step = (normalized < 1.5 ? 1
                       : normalized < 3 ? 2
                       : normalized < 7 ? 5
                                        : 10) *
                      magnitude;
  const double first = std::floor(lo / step);
  const double last = std::ceil(hi / step);
  // Degenerate ranges (denormal spans, values near the double limits): just the two ends.
  if (!(step > 0) || !std::isfinite(first) || !std::isfinite(last) || last - first > 4 * target) {
    return {lo, hi > lo ? hi : lo + 1};
  }
  std::vector<double> ticks;
  // Computed as multiples of the step (not by repeated addition) so 0.1 + 0.2 style errors
  // do not accumulate; the count is bounded by about 2 * target + 2.
  for (double i = first; i <= last; ++i) ticks.push_back(i * step);
  if (ticks.size() == 1) ticks.push_back((last + 1) * step);
  return ticks;
}

std::string RenderSvg(const Chart& chart) {
  auto usable = [&](const std::pair<double, double>& p) {
    return std::isfinite(p.first) && std::isfinite(p.second) && (!chart.log_x || p.first > 0);
  };
  auto tx = [&](double x) { return chart.log_x ? std::log2(x) : x; };

  Range xr, yr;
  std::vector<double> xs;  // distinct x values, for log-axis ticks
  for (const Series& s : chart.series) {
    for (const auto& p : s.points) {
      if (!usable(p)) continue;
      xr.Add(tx(p.first));
      yr.Add(p.second);
      xs.push_back(p.first);
    }
  }
  if (xr.empty()) xr = {0, 1};
  if (yr.empty()) yr = {0, 1};
  yr.Add(0);  // throughput and latency charts read best from zero

  std::vector<double> x_ticks;
  if (chart.log_x) {
    std::sort(xs.begin(), xs.end());
    xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
    const size_t stride = xs.size() / kMaxLogTicks + 1;
    for (size_t i = 0; i < xs.size(); i += stride) x_ticks.push_back(xs[i]);
    if (xr.lo == xr.hi) xr = {xr.lo - 1, xr.hi + 1};
  } else {
    x_ticks = NiceTicks(xr.lo, xr.hi, 6);
    xr = {x_ticks.front(), x_ticks.back()};
  }
  const std::vector<double> y_ticks = NiceTicks(yr.lo, yr.hi, 5);
  yr = {y_ticks.front(), y_ticks.back()};

  auto px = [&](double x) { return kLeft + (tx(x) - xr.lo) / (xr.hi - xr.lo) * kPlotWidth; };
  auto py = [&](double y) {
    return kTop + kPlotHeight - (y - yr.lo) / (yr.hi - yr.lo) * kPlotHeight;
  };

  std::string svg = absl::StrFormat(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" "
      "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n",
      kWidth, kHeight, kWidth, kHeight, kWidth, kHeight);
  absl::StrAppendFormat(&svg,
                        "<text x=\"%.2f\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" "
                        "font-weight=\"bold\">%s</text>\n",
                        kLeft + kPlotWidth / 2, XmlEscape(chart.title));

  // Grid lines and tick labels.
  for (double t : y_ticks) {
    const double y = py(t);
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" "
                          "stroke=\"#dddddd\"/>\n"
                          "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n",
                          kLeft, y, kLeft + kPlotWidth, y, kLeft - 6, y + 4,
                          XmlEscape(FormatNumber(t)));
  }
  for (double t : x_ticks) {
    const double x = px(t);
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" "
                          "stroke=\"#dddddd\"/>\n"
                          "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">%s</text>\n",
                          x, kTop, x, kTop + kPlotHeight, x, kTop + kPlotHeight + 18,
                          XmlEscape(FormatNumber(t)));
  }
  // Axes and their labels.
  absl::StrAppendFormat(
      &svg,
      "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"black\"/>\n"
      "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"black\"/>\n",
      kLeft, kTop + kPlotHeight, kLeft + kPlotWidth, kTop + kPlotHeight, kLeft, kTop, kLeft,
      kTop + kPlotHeight);
  absl::StrAppendFormat(&svg, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">%s</text>\n",
                        kLeft + kPlotWidth / 2, kHeight - 18,
                        XmlEscape(chart.x_label + (chart.log_x ? " (log scale)" : "")));
  absl::StrAppendFormat(&svg,
                        "<text x=\"18\" y=\"%.2f\" text-anchor=\"middle\" "
                        "transform=\"rotate(-90 18 %.2f)\">%s</text>\n",
                        kTop + kPlotHeight / 2, kTop + kPlotHeight / 2, XmlEscape(chart.y_label));

  // Series and legend.
  for (size_t i = 0; i < chart.series.size(); ++i) {
    const Series& s = chart.series[i];
    const char* color = kColors[i % std::size(kColors)];
    std::string points;
    std::string markers;
    for (size_t k = 0; k < s.points.size(); ++k) {
      const auto& p = s.points[k];
      if (!usable(p)) continue;
      absl::StrAppendFormat(&points, "%s%.2f,%.2f", points.empty() ? "" : " ", px(p.first),
                            py(p.second));
      absl::StrAppendFormat(&markers, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"/>\n",
                            px(p.first), py(p.second), color);
      if (k < s.point_labels.size() && !s.point_labels[k].empty()) {
        absl::StrAppendFormat(
            &markers, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"10\" fill=\"%s\">%s</text>\n",
            px(p.first) + 5, py(p.second) - 5, color, XmlEscape(s.point_labels[k]));
      }
    }
    if (!points.empty()) {
      absl::StrAppendFormat(&svg,
                            "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
                            "points=\"%s\"/>\n%s",
                            color, points, markers);
    }
    const double ly = kTop + 10 + 20 * static_cast<double>(i);
    const double lx = kLeft + kPlotWidth + 16;
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"%s\" "
                          "stroke-width=\"2\"/>\n"
                          "<text x=\"%.2f\" y=\"%.2f\">%s</text>\n",
                          lx, ly, lx + 22, ly, color, lx + 28, ly + 4, XmlEscape(s.name));
  }
  svg += "</svg>\n";
  return svg;
}

absl::Status WriteSvgFile(const std::string& path, const Chart& chart) {
  std::ofstream out(path, std::ios::trunc);
  out << RenderSvg(chart);
  out.close();
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace taskmoe::loadtest
