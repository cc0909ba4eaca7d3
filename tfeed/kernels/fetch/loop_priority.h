// The fetch loop's place in the scheduler: real-time priority where the
// process may use it, bounded by the loop's own CPU use (see loop_priority.cc).

#ifndef TFEED_KERNELS_FETCH_LOOP_PRIORITY_H_
#define TFEED_KERNELS_FETCH_LOOP_PRIORITY_H_

#include <chrono>

namespace tfeed {
namespace fetch {

class LoopPriority {
 public:
  // On the loop thread, once: SCHED_FIFO where allowed and not turned off by
  // TFEED_LOOP_REALTIME=0; the shortest fair time slices otherwise.
  void Begin();
  // On the loop thread, every iteration; acts once per kLoopCheckPeriodS: leaves
  // real time for the next period when the loop used more than
  // kLoopMaxRealtimeShare of a core in the last one, and returns once under it.
  void Check(std::chrono::steady_clock::time_point now);

 private:
  bool allowed_ = false;   // SCHED_FIFO was granted once
  bool realtime_ = false;  // the thread runs SCHED_FIFO now
  std::chrono::steady_clock::time_point next_check_{};
  double cpu_at_check_ = 0;  // thread CPU seconds at the last check
};

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_LOOP_PRIORITY_H_
