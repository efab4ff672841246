// Arrival times of the open loop: a Poisson process of a given mean rate, i.e. independent
// exponentially distributed gaps. Generated from a seeded std::mt19937_64 (whose output the
// C++ standard fixes) with our own inverse-CDF transform rather than
// std::exponential_distribution (whose algorithm it does not), so a seed gives the same
// schedule with every standard library.
#ifndef TASKMOE_LOADTEST_SCHEDULE_H_
#define TASKMOE_LOADTEST_SCHEDULE_H_

#include <cstdint>
#include <random>

namespace taskmoe::loadtest {

class PoissonSchedule {
 public:
  // `rate`: mean arrivals per second, > 0.
  PoissonSchedule(double rate, uint64_t seed);

  // Seconds from the start to the next arrival; strictly increasing from call to call.
  double NextArrival();
  double rate() const { return rate_; }

 private:
  double rate_;
  double now_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace taskmoe::loadtest

#endif  // TASKMOE_LOADTEST_SCHEDULE_H_
