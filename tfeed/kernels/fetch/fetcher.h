// The process-wide fetcher behind TfeedFetch: one libcurl multi handle, one
// loop thread, in the way curl splits its multi interface from transfers.
//
//   ComputeAsync (a tf.data thread)      Fetcher loop thread (one per process)
//   ------------------------------      -------------------------------------
//   allocate outputs, read file:// URLs
//   Submit(batch) ----- eventfd ----->  admit transfers host by host, each within
//                                       its adaptive window (max_in_flight in all)
//   return                              libcurl multi + epoll: keep-alive pool,
//                                       DNS cache, per-host limit, redirects,
//                                       gzip, size cap, connect/read timeouts
//                                       retries on a timer heap (backoff with
//                                       equal jitter, Retry-After, deadline)
//                                       sniff magic bytes, write outputs
//   done() <--- completer thread <----  last transfer of the batch finished
//
// TfeedFetchPooled is the same with the outputs shared by one iterator's calls
// (a "lot"): results go to the lot's oldest waiting call (full calls before a
// short one), so a hanging URL delays the lot's last call instead of its own
// group (see struct Lot).
//
// Semantics follow tfeed/fetching/python/download.py; reasons and retry rules
// are tfeed/contract.py's (the generated contract.h).
//
//   event_loop.cc  start, the epoll loop, intake of batches and cancellations
//   attempts.cc    admission, easy-handle setup and pooling, read timeouts,
//                  classifying an attempt's end, retry timers
//   results.cc     outputs of finished transfers, lots, cancellation
//   hosts.cc       one queue per host, taken in turns; limiter.cc: each host's
//                  adaptive window, pace and pause (tfeed/fetching/limiter.py)

#ifndef TFEED_KERNELS_FETCH_FETCHER_H_
#define TFEED_KERNELS_FETCH_FETCHER_H_

#include <sys/epoll.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "classify.h"
#include "completer.h"
#include "curl_loader.h"
#include "hosts.h"
#include "loop_priority.h"
#include "transfer.h"

namespace tfeed {
namespace fetch {

class Fetcher {
 public:
  // The process's fetcher, started on first use; nullptr with *error when it cannot start.
  static Fetcher* Get(std::string* error);

  // Any thread.  Takes ownership; the batch's done runs exactly once.
  void Submit(std::unique_ptr<Batch> batch);

  // Any thread.  `batch` holds the call's URLs still to fetch; the call's done
  // runs exactly once, when its rows are filled or its lot is cancelled (the
  // iterator went away: every call of the lot ends Cancelled).
  void SubmitPooled(std::unique_ptr<Batch> batch, std::unique_ptr<Call> call);

  void Shutdown();

  // Any thread: the host table as the loop last published it.
  std::vector<HostRow> HostRows() const { return hosts_.Rows(); }

 private:
  using Ref = QueuedRef;
  struct Timer {
    Clock::time_point when;
    Ref ref;
    bool operator>(const Timer& o) const { return when > o.when; }
  };

  Fetcher() = default;
  Fetcher(const Fetcher&) = delete;
  Fetcher& operator=(const Fetcher&) = delete;
  ~Fetcher();  // only a fetcher that failed to start is ever deleted

  // -- event_loop.cc ----------------------------------------------------------
  bool Start(std::string* error);
  void Wake();
  void WatchCancellation(Waiter* waiter, uint64_t key, std::vector<uint64_t>* queue);
  static int OnSocket(CURL*, curl_socket_t fd, int what, void* self, void* registered);
  static int OnTimer(CURLM*, long timeout_ms, void* self);
  void Loop();
  void Dispatch(const std::vector<epoll_event>& events, int n);
  void RunCurlTimeout();
  bool Intake();
  void AcceptBatch(std::unique_ptr<Batch> batch);
  void AcceptCall(std::unique_ptr<Call> call, std::vector<uint64_t>* lot_cancels);
  void ApplyLimits(const Options& opt);
  Clock::duration SleepFor(Clock::time_point admitted);
  int WaitForEvents(std::vector<epoll_event>* events, Clock::time_point admitted);
  void Teardown();

  // -- attempts.cc ------------------------------------------------------------
  static size_t OnWrite(char* data, size_t size, size_t count, void* user);
  static size_t OnHeader(char* line, size_t size, size_t count, void* user);
  static int OnConnected(void* user, char*, char*, int, int);
  Transfer* Resolve(const Ref& ref);
  double Since(Clock::time_point t) const { return Seconds(t - epoch_); }
  void Admit(Clock::time_point now);
  int64_t HeldBytes() const;
  void FireTimers(Clock::time_point now);
  CURL* AcquireEasy();
  void ReleaseEasy(Transfer* t);
  void StartAttempt(Transfer* t, Clock::time_point now);
  void ConfigureHandle(CURL* e, Transfer* t, long left_ms, Clock::time_point now);
  void RemoveActive(Transfer* t);
  void Harvest();
  void ScanReadTimeouts(Clock::time_point now);
  AttemptEnd Observe(Transfer* t, CURLcode rc);
  void Finish(Transfer* t, CURLcode rc);
  void FailFinally(Transfer* t, Verdict v, Clock::time_point now);
  bool Requeue(Transfer* t, const AttemptEnd& end, Clock::time_point now);
  void GiveUpThrottled(Clock::time_point now);
  void TellHost(Transfer* t, bool image, Clock::time_point now);

  // -- results.cc -------------------------------------------------------------
  void Complete(Transfer* t, Verdict v);
  void CompletePooled(Transfer* t, const Verdict& v);
  void Deliver(uint64_t id, Result r);
  void FinishCall(std::unique_ptr<Call> call);
  void DropIfIdle(uint64_t id);
  void CancelLotNow(uint64_t id);
  void ReleaseTransfers(Batch* b);
  void CancelBatch(Batch* b);
  void FinishBatch(Batch* b);

  std::mutex mu_;
  std::vector<std::unique_ptr<Batch>> incoming_;
  std::vector<std::unique_ptr<Call>> incoming_calls_;
  std::vector<uint64_t> cancels_, lot_cancels_;
  bool stop_ = false;

  CURLM* multi_ = nullptr;
  int epoll_ = -1, wake_ = -1;
  std::thread loop_;
  Completer completer_;

  // Loop-thread state.
  std::unordered_map<uint64_t, std::unique_ptr<Batch>> batches_;
  std::unordered_map<uint64_t, Lot> lots_;
  HostTable hosts_;
  Clock::time_point epoch_ = Clock::now(), next_publish_ = Clock::time_point::min();
  bool hosts_dirty_ = false;  // the host table changed since it was last published
  std::priority_queue<Timer, std::vector<Timer>, std::greater<Timer>> timers_;
  std::vector<Transfer*> active_;
  std::vector<CURL*> free_easy_;
  int64_t in_flight_ = 0, host_limit_ = 0, total_limit_ = 0;
  int64_t parked_bytes_ = 0;  // bodies finished but not yet returned (batch outputs, lots' ready results)
  bool admit_pending_ = false;  // a slot or bytes were freed after this iteration's Admit: run it again at once
  bool precise_wait_ = true;  // epoll_pwait2 until the kernel says ENOSYS
  LoopPriority priority_;     // the loop thread's scheduling (loop_priority.cc)
  Clock::time_point curl_due_ = Clock::time_point::max(), next_scan_ = Clock::time_point::min();
  std::mt19937_64 rng_{std::random_device{}()};
};

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_FETCHER_H_
