// The fetch loop asks the scheduler to run it as soon as it wakes.  The loop
// shares cores with tf.data's decode threads, and every response it leaves
// unread holds a request slot of a host that allows only a few: with the
// client on one core (a host that serves 16 at a time, 100 ms per request),
// the loop waited ~20 ms on the run queue once per decoded batch of 32, and
// all 16 slots sat idle meanwhile: 144 images/s of 160.  Most of that wait
// the loop brought on itself, by waking its done-callback thread before it had
// sent its next requests (completer.h: 154/s now at fair priority).  Real time
// still pays where the loop must wake on time, as for a paced host: nginx
// limit_req 200 r/s, 181 images/s against 162 at fair priority.
//  1. SCHED_FIFO at the lowest real-time priority, where the process may
//     (CAP_SYS_NICE, or RLIMIT_RTPRIO >= 1): 155/s there, as fast as a client
//     that does not decode; 16 hosts x 4: 512 -> 586/s.  The loop sleeps in
//     epoll between events (~1% of a core at 150 images/s).  Should it ever
//     run hot (a burst of work, or a bug that stops it sleeping), it leaves
//     real time for the next 0.1 s whenever it used more than half a core in
//     the last 0.1 s, so it can never hold a core from the threads that share
//     it (the kernel's real-time throttling alone leaves them 5%).
//     TFEED_LOOP_REALTIME=0 in the environment leaves real time out.  The
//     rule and its constants are tfeed.contract's (contract.h), which the
//     Python engine's loop (fetching/python/loop_priority.py) follows too.
//  2. Otherwise the shortest time slices (0.1 ms): on Linux 6.12+ (EEVDF) a
//     fair task's sched_runtime is its slice, and a shorter slice lets it
//     preempt a running task sooner when it wakes; no privilege needed, nice
//     unchanged.  Against nginx limit_req 200 r/s (no burst) the loop waited
//     2.0 s on the run queue over 1,000 images and fetched 143-145 images/s
//     with the default slices, 1.6 s and 153-155/s with 0.1 ms ones.  Older
//     kernels ignore the field; a refused call changes nothing.

#include "loop_priority.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "contract.h"

namespace tfeed {
namespace fetch {
namespace {
namespace c = ::tfeed::contract;

const auto kCheckPeriod = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
    std::chrono::duration<double>(c::kLoopCheckPeriodS));

bool EnterRealtime() {
  sched_param param{};
  param.sched_priority = sched_get_priority_min(SCHED_FIFO);
  return pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) == 0;
}

// A fair thread (SCHED_OTHER, nice unchanged) with 0.1 ms slices.
void UseShortSlices() {
#ifdef SYS_sched_setattr
  struct {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
  } attr{};
  attr.size = sizeof attr;  // SCHED_ATTR_SIZE_VER0 (48 bytes)
  attr.policy = SCHED_OTHER;
  attr.nice = getpriority(PRIO_PROCESS, 0);
  attr.runtime = 100 * 1000;  // ns
  if (syscall(SYS_sched_setattr, 0, &attr, 0) == 0) return;
#endif
  sched_param param{};
  pthread_setschedparam(pthread_self(), SCHED_OTHER, &param);
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

}  // namespace

void LoopPriority::Begin() {
  const char* setting = std::getenv(c::kLoopRealtimeSwitch);
  allowed_ = realtime_ = (setting == nullptr || std::string(setting) != "0") && EnterRealtime();
  if (!realtime_) UseShortSlices();
  next_check_ = std::chrono::steady_clock::now() + kCheckPeriod;
  cpu_at_check_ = ThreadCpuSeconds();
}

void LoopPriority::Check(std::chrono::steady_clock::time_point now) {
  if (!allowed_ || now < next_check_) return;
  const double period = std::chrono::duration<double>(now - next_check_ + kCheckPeriod).count();
  const double cpu = ThreadCpuSeconds();
  const bool hot = cpu - cpu_at_check_ > c::kLoopMaxRealtimeShare * period;
  next_check_ = now + kCheckPeriod;
  cpu_at_check_ = cpu;
  if (hot && realtime_) {
    UseShortSlices();
    realtime_ = false;
  } else if (!hot && !realtime_) {
    realtime_ = EnterRealtime();
  }
}

}  // namespace fetch
}  // namespace tfeed
