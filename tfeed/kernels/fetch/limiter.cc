// The state machine of tfeed/fetching/limiter.py, step for step.

#include "limiter.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "contract.h"

namespace tfeed {
namespace fetch {
namespace {
namespace c = ::tfeed::contract;
constexpr double kInf = std::numeric_limits<double>::infinity();
}  // namespace

HostLimiter::HostLimiter(int64_t cap, double backoff, double max_backoff, double patience, bool adaptive)
    : cap_(std::max<int64_t>(1, cap)),
      adaptive_(adaptive),
      window_(adaptive ? std::min<double>(c::kInitialWindow, cap_) : cap_),
      backoff_(backoff),
      max_backoff_(max_backoff),
      patience_(patience),
      probe_quiet_(c::kProbeQuietS),
      floors_{kInf, kInf} {}

bool HostLimiter::CanStart(double now) const {
  return in_flight_ < static_cast<int64_t>(window_) && now >= paused_until_ && now >= next_start_;
}

double HostLimiter::ReadyAt(double now) const { return std::max({now, paused_until_, next_start_}); }

LimiterTicket HostLimiter::Start(double now) {
  LimiterTicket ticket{++seq_, in_flight_, successes_};
  ++in_flight_;
  if (started_any_) start_interval_ = 0.9 * start_interval_ + 0.1 * (now - last_start_);
  started_any_ = true;
  last_start_ = now;
  if (gap_ > min_gap_ && now < next_start_ + gap_) {  // the pace held this start back
    gap_ *= pace_settled_ ? c::kPaceRelax : c::kPaceRelaxFirst;
  }
  next_start_ = now + std::max(gap_, min_gap_);
  return ticket;
}

void HostLimiter::Succeeded(const LimiterTicket& ticket, double latency, double now, bool multiplexed) {
  --in_flight_;
  streak_ = 0, connect_misses_ = 0;
  unanswered_ = false;
  // served at once: those open at its start, at most as many as were answered while it was open
  served_level_ = std::max(served_level_, std::min(ticket.position, successes_ - ticket.successes) + 1);
  ++successes_;
  if (!adaptive_) return;
  if (ticket.seq <= burst_seq_) {  // a success of the burst open at the last overload cut
    ++burst_served_;
    ceiling_ = std::max(ceiling_, std::min(burst_level_, static_cast<double>(burst_served_)));
    if (burst_lifts_ && window_ < ceiling_) window_ = std::min<double>(cap_, ceiling_);
  }
  if (succeeded_any_) {
    const double interval = now - last_success_;
    success_interval_ = has_success_interval_ ? 0.9 * success_interval_ + 0.1 * interval : interval;
    has_success_interval_ = true;
  }
  succeeded_any_ = true;
  last_success_ = now;
  const double floor = AddLatency(latency);
  smooth_ = has_smooth_ ? (1 - c::kLatencySmoothing) * smooth_ + c::kLatencySmoothing * latency : latency;
  has_smooth_ = true;
  if (ticket.seq <= cut_seq_) return;  // started before the last cut
  if (smooth_ > c::kLatencyTolerance * floor + c::kLatencySlackS) {
    // never below kLatencyMinWindow, nor above the window an overload left
    Cut(std::min(window_, std::max(window_ * c::kLatencyDecrease, static_cast<double>(c::kLatencyMinWindow))),
        now, 0, 0);
  } else if (smooth_ > c::kSlowStartExit * floor + c::kLatencySlackS) {
    slow_start_ = false;  // requests begin to queue at the host: hold the window
  } else if (slow_start_) {
    const double opening = multiplexed ? c::kMultiplexedWindow : 0;
    window_ = std::min<double>(cap_, std::max<double>(window_ + c::kSlowStartGrowth, opening));
  } else if (!has_ceiling_ || now >= probe_at_) {
    window_ = std::min<double>(cap_, window_ + 1 / window_);
  } else if (window_ < ceiling_) {  // back up to the known level, not above it before the probe
    window_ = std::min(ceiling_, window_ + 1 / window_);
  }
}

void HostLimiter::Finished(const LimiterTicket&) { --in_flight_; }

void HostLimiter::Overloaded(const LimiterTicket& ticket, double now, long status, double retry_after,
                             std::mt19937_64& rng) {
  --in_flight_;
  ++throttles_;
  const bool fresh = ticket.seq > overload_seq_;  // not a latency cut's: it never saw this
  if (fresh) ++streak_;  // a burst shed at once is one event (fixed windows: every overload is fresh)
  if (!unanswered_) unanswered_ = true, unanswered_since_ = now;
  if (!adaptive_) return;
  const double pause = retry_after >= 0 ? std::min<double>(retry_after, c::kMaxPauseS) : -1;
  // a failed probe would cost such a pause: probe rarely
  if (pause >= 0 && fresh) probe_quiet_ = std::max(probe_quiet_, c::kPauseProbeQuiet * pause);
  if (status == 429 && fresh) {
    pace_settled_ = gap_ > 0;
    gap_ = PacedGap();
    next_start_ = std::max(next_start_, now + gap_);
  } else if (fresh) {
    const double served = served_level_ > 0 ? static_cast<double>(served_level_) : window_;
    const double level = std::max<double>(static_cast<double>(ticket.position), c::kMinWindow);
    Cut(std::min({window_ * c::kOverloadDecrease, level, served}), now, level, static_cast<double>(served_level_),
        status != 0 && pause < 0);
    served_level_ = 0;
  }
  if (pause >= 0) {
    Pause(now + pause);
  } else if (fresh && window_ <= c::kMinWindow && streak_ > 1) {
    const double ceiling = std::min(max_backoff_, backoff_ * std::ldexp(1.0, static_cast<int>(streak_) - 2));
    const double fixed = ceiling * c::kBackoffFixedShare;
    Pause(now + fixed + std::uniform_real_distribution<double>(0, ceiling - fixed)(rng));
  }
  if (fresh) cut_seq_ = overload_seq_ = seq_;
}

void HostLimiter::Rested(double now) {
  if (now - std::max(last_start_, paused_until_) > patience_) unanswered_ = false, streak_ = 0;
}

bool HostLimiter::GivenUp(double now) const { return unanswered_ && now - unanswered_since_ > patience_; }

void HostLimiter::Cut(double target, double now, double overload, double served, bool lifts) {
  const bool probing = has_ceiling_ && window_ > ceiling_;
  if (overload > 0 && probing) {  // the probe failed: back to the known level, probe later
    probe_quiet_ = std::max(probe_quiet_, std::min<double>(2 * probe_quiet_, c::kMaxProbeQuietS));
    target = std::max<double>(ceiling_, c::kMinWindow);
  } else if (overload > 0) {
    ceiling_ = std::max<double>(std::min(overload, served > 0 ? served : target), c::kMinWindow);
    has_ceiling_ = true;
    burst_seq_ = seq_, burst_level_ = overload, burst_served_ = 0;
    burst_lifts_ = lifts;
  } else {  // latency says the host queues: the burst may still raise the level, not the window
    burst_lifts_ = false;
  }
  window_ = std::max<double>(c::kMinWindow, target);
  slow_start_ = false;
  probe_at_ = now + probe_quiet_;
  cut_seq_ = seq_;
}

double HostLimiter::ConnectTimeout(double configured) const {
  const double floor = std::min(floors_[0], floors_[1]);
  if (!adaptive_ || floor == kInf) return configured;
  const double timeout = std::max(c::kMinConnectTimeoutS, c::kConnectFloorFactor * floor);
  return std::min(configured, std::ldexp(timeout, static_cast<int>(std::min<int64_t>(connect_misses_, 16))));
}

double HostLimiter::PacedGap() const {
  if (gap_ > 0) return gap_ * c::kPaceBackoff;
  if (success_interval_ > 0) return success_interval_ * c::kPaceMargin;
  // before two successes: about one start per round trip
  return std::max({start_interval_, smooth_, 1e-4}) / c::kOverloadDecrease;
}

void HostLimiter::Pause(double until) { paused_until_ = std::max(paused_until_, until); }

double HostLimiter::AddLatency(double latency) {
  floors_[0] = std::min(floors_[0], latency);
  if (++samples_ >= c::kLatencySamples) {
    floors_[1] = floors_[0];
    floors_[0] = latency;
    samples_ = 0;
  }
  return std::min(floors_[0], floors_[1]);
}

}  // namespace fetch
}  // namespace tfeed
