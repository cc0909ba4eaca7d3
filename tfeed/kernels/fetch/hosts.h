// The fetcher's queues: one per host, each behind a HostLimiter (limiter.h),
// as tfeed/fetching/python/hosts.py keeps them for the Python engine.  URLs
// wait in their host's queue, oldest first, until the host's window, pace and
// pause allow a start; hosts take turns, so a throttled or slow host never
// holds back the others.  Loop thread only, except Rows() (any thread).

#ifndef TFEED_KERNELS_FETCH_HOSTS_H_
#define TFEED_KERNELS_FETCH_HOSTS_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "limiter.h"
#include "options.h"

namespace tfeed {
namespace fetch {

struct QueuedRef {
  uint64_t batch;
  int64_t index;
};

struct Host {
  Host(std::string key, const Options& opt);
  std::string key;
  bool adaptive;
  HostLimiter limiter;
  std::deque<QueuedRef> queue;
  bool in_turns = false, answered = false;
  int64_t requests = 0, images = 0, failures = 0;
};

// One host's counters and state, as TfeedHostStats reports them.
struct HostRow {
  std::string host;
  int64_t requests, images, failures, throttles, queued, in_flight;
  double window, paced_rps, paused_s;
};

// "scheme://host:port" of a URL ("" when it has no authority).
std::string HostKey(const std::string& url);

class HostTable {
 public:
  // The state of url's host for datasets shaped like `opt` (created on first use).
  Host* Find(const std::string& url, const Options& opt, double now);
  void Put(Host* host, QueuedRef ref, bool front = false);
  // The next host whose limiter lets a request start now, its oldest ref popped into *ref.
  Host* NextReady(double now, QueuedRef* ref);
  // When a host waiting on its pace or a pause may start again; < 0: none waits so.
  double NextWakeup(double now) const;
  // Hosts past their patience: their queues, emptied into *given_up.
  void GiveUpThrottled(double now, std::vector<QueuedRef>* given_up);
  void Publish(double now);  // refresh the rows Rows() returns
  std::vector<HostRow> Rows() const;

 private:
  std::unordered_map<std::string, std::unique_ptr<Host>> hosts_;
  std::deque<Host*> turns_;
  mutable std::mutex rows_mu_;
  std::vector<HostRow> rows_;
};

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_HOSTS_H_
