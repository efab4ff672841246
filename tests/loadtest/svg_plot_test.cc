// The SVG chart writer: well-formed XML, escaped text, finite coordinates, sensible ticks.
#include "loadtest/svg_plot.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/match.h"

namespace taskmoe::loadtest {
namespace {

// A small well-formedness check, enough for the SVG we write: one root element, tags nested
// properly, attribute values quoted, no raw '<' or unescaped '&' in text, one XML
// declaration at the start. Returns "" when fine, else what is wrong.
std::string CheckWellFormed(const std::string& xml) {
  std::vector<std::string> open;
  size_t i = 0;
  int roots = 0;
  if (!absl::StartsWith(xml, "<?xml ")) return "no XML declaration";
  i = xml.find("?>");
  if (i == std::string::npos) return "unterminated declaration";
  i += 2;
  while (i < xml.size()) {
    if (xml[i] == '&') {
      const size_t semi = xml.find(';', i);
      if (semi == std::string::npos) return "bare &";
      const std::string entity = xml.substr(i, semi - i + 1);
      if (entity != "&amp;" && entity != "&lt;" && entity != "&gt;" && entity != "&quot;" &&
          entity != "&apos;") {
        return "unknown entity " + entity;
      }
      i = semi + 1;
      continue;
    }
    if (xml[i] != '<') {
      if (open.empty() && !std::isspace(static_cast<unsigned char>(xml[i]))) {
        return "text outside the root";
      }
      ++i;
      continue;
    }
    const size_t end = xml.find('>', i);
    if (end == std::string::npos) return "unterminated tag";
    std::string tag = xml.substr(i + 1, end - i - 1);
    i = end + 1;
    if (tag.find('<') != std::string::npos) return "'<' inside a tag";
    if (!tag.empty() && tag[0] == '/') {
      if (open.empty() || open.back() != tag.substr(1))
        return "mismatched </" + tag.substr(1) + ">";
      open.pop_back();
      continue;
    }
    const bool self_closing = !tag.empty() && tag.back() == '/';
    if (self_closing) tag.pop_back();
    // Attributes: name="value" pairs, values without '<' or a raw '"'.
    const size_t space = tag.find(' ');
    const std::string name = tag.substr(0, space);
    if (name.empty()) return "empty tag name";
    size_t quotes = 0;
    for (char c : tag) quotes += c == '"';
    if (quotes % 2 != 0) return "unbalanced quotes in <" + name + ">";
    if (open.empty()) ++roots;
    if (!self_closing) open.push_back(name);
  }
  if (!open.empty()) return "unclosed <" + open.back() + ">";
  if (roots != 1) return "expected one root element";
  return "";
}

Chart SampleChart() {
  Chart chart{.title = "Tokens <&> \"quotes\"", .x_label = "x", .y_label = "y'"};
  chart.series.push_back({.name = "a<b", .points = {{1, 10}, {2, 20}, {3, 15}}});
  chart.series.push_back({.name = "b&c", .points = {{1, 5}, {2.5, 7}}, .point_labels = {"c=1"}});
  return chart;
}

TEST(SvgPlotTest, WellFormedWithEscapedText) {
  const std::string svg = RenderSvg(SampleChart());
  EXPECT_EQ(CheckWellFormed(svg), "");
  EXPECT_TRUE(absl::StrContains(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_TRUE(absl::StrContains(svg, "Tokens &lt;&amp;&gt; &quot;quotes&quot;"));
  EXPECT_TRUE(absl::StrContains(svg, ">a&lt;b</text>"));  // legend
  EXPECT_TRUE(absl::StrContains(svg, ">b&amp;c</text>"));
  EXPECT_TRUE(absl::StrContains(svg, ">c=1</text>"));  // point label
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '\n') > 10, true);
  // One polyline per series, one marker per point.
  size_t polylines = 0, circles = 0;
  for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1))
    ++polylines;
  for (size_t p = svg.find("<circle"); p != std::string::npos; p = svg.find("<circle", p + 1))
    ++circles;
  EXPECT_EQ(polylines, 2u);
  EXPECT_EQ(circles, 5u);
}

TEST(SvgPlotTest, CheckerRejectsBrokenXml) {
  // The checker above must itself catch what it is there to catch.
  EXPECT_NE(CheckWellFormed("<?xml version=\"1.0\"?><svg><g></svg>"), "");
  EXPECT_NE(CheckWellFormed("<?xml version=\"1.0\"?><svg>a & b</svg>"), "");
  EXPECT_NE(CheckWellFormed("<?xml version=\"1.0\"?><svg a=\"1></svg>"), "");
  EXPECT_EQ(CheckWellFormed("<?xml version=\"1.0\"?><svg><g/></svg>"), "");
}

TEST(SvgPlotTest, NonFiniteAndEmptyDataStillRender) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  Chart chart{.title = "t", .x_label = "x", .y_label = "y", .log_x = true};
  chart.series.push_back({.name = "s", .points = {{nan, 1}, {4, inf}, {-1, 2}, {0, 3}, {8, 1}}});
  chart.series.push_back({.name = "empty"});
  const std::string svg = RenderSvg(chart);
  EXPECT_EQ(CheckWellFormed(svg), "");
  EXPECT_FALSE(absl::StrContains(svg, "nan"));
  EXPECT_FALSE(absl::StrContains(svg, "inf"));
  EXPECT_EQ(CheckWellFormed(RenderSvg(Chart{})), "");
}

TEST(SvgPlotTest, LogAxisTicksAtTheDataValues) {
  Chart chart{
      .title = "batch", .x_label = "texts per request", .y_label = "tokens/s", .log_x = true};
  chart.series.push_back({.name = "m", .points = {{1, 10}, {8, 60}, {32, 200}, {512, 900}}});
  const std::string svg = RenderSvg(chart);
  EXPECT_EQ(CheckWellFormed(svg), "");
  for (const char* tick : {">1</text>", ">8</text>", ">32</text>", ">512</text>"}) {
    EXPECT_TRUE(absl::StrContains(svg, tick)) << tick;
  }
  EXPECT_TRUE(absl::StrContains(svg, "(log scale)"));
}

TEST(NiceTicksTest, CoversTheRangeWithRoundSteps) {
  const std::vector<double> ticks = NiceTicks(0, 937, 5);
  ASSERT_GE(ticks.size(), 3u);
  EXPECT_LE(ticks.front(), 0);
  EXPECT_GE(ticks.back(), 937);
  const double step = ticks[1] - ticks[0];
  EXPECT_DOUBLE_EQ(step, 200);
  EXPECT_LE(ticks.size(), 12u);
  // Degenerate and odd ranges still give at least two ticks, finitely many.
  EXPECT_GE(NiceTicks(5, 5, 5).size(), 2u);
  EXPECT_GE(NiceTicks(0, 0, 5).size(), 2u);
  EXPECT_GE(NiceTicks(1e300, 1e300 + 1, 5).size(), 2u);
  EXPECT_LE(NiceTicks(0, 5e-324, 5).size(), 30u);
  EXPECT_TRUE(NiceTicks(0, std::numeric_limits<double>::infinity(), 5).empty());
}

}  // namespace
}  // namespace taskmoe::loadtest
