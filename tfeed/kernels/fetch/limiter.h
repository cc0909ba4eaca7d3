// One host's adaptive window, pace and pause: the C++ twin of
// tfeed/fetching/limiter.py (the rules and their reasons are documented
// there; the constants come from tfeed/contract.py through contract.h).
// tests/test_limiter_conformance.py replays the same event traces through
// both and compares every state.  Pure: no libcurl, no TensorFlow.  Times
// are seconds of a monotonic clock, passed in.

#ifndef TFEED_KERNELS_FETCH_LIMITER_H_
#define TFEED_KERNELS_FETCH_LIMITER_H_

#include <cstdint>
#include <random>

namespace tfeed {
namespace fetch {

struct LimiterTicket {
  int64_t seq = 0;       // the request's number among the host's starts
  int64_t position = 0;  // requests open when it started
  int64_t successes = 0;  // the host's successes before it started
};

class HostLimiter {
 public:
  HostLimiter(int64_t cap, double backoff, double max_backoff, double patience, bool adaptive);

  bool CanStart(double now) const;
  double ReadyAt(double now) const;  // when the pace or a pause next allows a start
  LimiterTicket Start(double now);
  // multiplexed: the answer came over a connection carrying concurrent streams (HTTP/2).
  void Succeeded(const LimiterTicket& ticket, double latency, double now, bool multiplexed = false);
  void Finished(const LimiterTicket& ticket);  // ended without news of the host's load
  // status 429 or 503, or 0 for a refused, reset or timed-out connection; retry_after < 0: none.
  void Overloaded(const LimiterTicket& ticket, double now, long status, double retry_after, std::mt19937_64& rng);
  bool GivenUp(double now) const;
  // New work for a host with nothing queued or open: if it has had no start
  // (nor pause) for longer than its patience, an old spell of overload (another
  // dataset's, minutes ago) no longer counts against it.
  void Rested(double now);

  // Seconds a new connection to the host may take (limiter.py: connect timeouts).
  double ConnectTimeout(double configured) const;
  // A new connection of `ticket`'s request timed out: counted once per overflow (limiter.py).
  void ConnectMissed(const LimiterTicket& ticket) {
    if (ticket.seq > miss_seq_) ++connect_misses_, miss_seq_ = seq_;
  }

  double window() const { return window_; }
  double gap() const { return gap_; }
  double paused_until() const { return paused_until_; }
  int64_t in_flight() const { return in_flight_; }
  int64_t throttles() const { return throttles_; }
  void set_min_gap(double seconds) { min_gap_ = seconds; }

 private:
  // overload: the requests open before the shed one (0: a latency cut); served: the most served
  // at once among earlier successes; lifts: the burst's successes raise the window too.  See limiter.py.
  void Cut(double target, double now, double overload, double served, bool lifts = false);
  void Pause(double until);
  double AddLatency(double latency);
  double PacedGap() const;

  int64_t cap_;
  bool adaptive_;
  double window_, min_gap_ = 0, gap_ = 0, paused_until_ = 0;
  int64_t in_flight_ = 0, throttles_ = 0;
  bool slow_start_ = true, has_ceiling_ = false, has_smooth_ = false;
  bool pace_settled_ = false;  // a second 429 has bounded the pace from above
  double smooth_ = 0;  // moving average of latencies
  double ceiling_ = 0;
  double backoff_, max_backoff_, patience_;
  int64_t seq_ = 0, cut_seq_ = 0;  // requests started, and before the last cut
  int64_t overload_seq_ = 0;      // requests started before the last overload event
  int64_t successes_ = 0;
  double probe_quiet_, probe_at_ = 0, next_start_ = 0, start_interval_ = 0, last_start_ = 0;
  bool started_any_ = false, succeeded_any_ = false, has_success_interval_ = false;
  double success_interval_ = 0, last_success_ = 0;  // moving average of the interval between successes
  double floors_[2];
  int64_t samples_ = 0, streak_ = 0, served_level_ = 0;
  int64_t burst_seq_ = 0, burst_served_ = 0;  // the burst open at the last overload cut, its successes
  double burst_level_ = 0;                    // requests open before the shed one
  bool burst_lifts_ = false;                  // its successes lift the window (a 503 without Retry-After)
  int64_t connect_misses_ = 0;                // connect timeouts since the last success, one per overflow
  int64_t miss_seq_ = 0;                      // requests started before the last counted connect timeout
  bool unanswered_ = false;
  double unanswered_since_ = 0;
};

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_LIMITER_H_
