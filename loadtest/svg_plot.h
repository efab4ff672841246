// A minimal SVG line chart for sweep results: axes with "nice" ticks (or, for a log2 x axis,
// ticks at the data's x values), axis labels, a title, one polyline with point markers per
// series and a legend. Self-contained SVG 1.1 text, viewable in any browser and embeddable
// in Markdown.
#ifndef TASKMOE_LOADTEST_SVG_PLOT_H_
#define TASKMOE_LOADTEST_SVG_PLOT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace taskmoe::loadtest {

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y), drawn in the given order
  // Optional text beside each point (e.g. the concurrency that gave it); empty: none.
  std::vector<std::string> point_labels;
};

struct Chart {
  std::string title;
  std::string x_label;
  std::string y_label;
  bool log_x = false;  // log2 x axis (positive x only), e.g. batch sizes 1, 8, 32, 128
  std::vector<Series> series;
};

// Points with a non-finite coordinate (or x <= 0 on a log axis) are left out.
std::string RenderSvg(const Chart& chart);

// `text` with &, <, >, " and ' escaped for XML text and attribute values.
std::string XmlEscape(absl::string_view text);

// "Nice" tick values covering [lo, hi]: about `target` steps of 1, 2 or 5 times a power of 10.
std::vector<double> NiceTicks(double lo, double hi, int target);

absl::Status WriteSvgFile(const std::string& path, const Chart& chart);

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_SVG_PLOT_H_
