// Exponential gaps by inversion: gap = -ln(1 - u) / rate for u uniform in [0, 1).
#include "loadtest/schedule.h"

#include <cmath>

namespace taskmoe::loadtest {

PoissonSchedule::PoissonSchedule(double rate, uint64_t seed) : rate_(rate), rng_(seed) {}

double PoissonSchedule::NextArrival() {
  // 53 random bits: u in [0, 1), so 1 - u is in (0, 1] and the logarithm is finite.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  const double next = now_ - std::log1p(-u) / rate_;
  // A zero gap (u == 0) would give two arrivals at the same instant; the smallest step
  // above `now_` keeps the times strictly increasing without changing the distribution
  // measurably.
  now_ = next > now_ ? next : std::nextafter(now_, INFINITY);
  return now_;
}

}  // namespace taskmoe::loadtest
