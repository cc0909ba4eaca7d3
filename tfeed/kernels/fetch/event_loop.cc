// The fetcher's life and its loop: epoll over libcurl's sockets and an
// eventfd for new batches and cancellations (see fetcher.h).

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "fetcher.h"

namespace tfeed {
namespace fetch {
namespace {

std::mutex g_mu;
Fetcher* g_fetcher = nullptr;

void ShutdownAtExit() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_fetcher != nullptr) g_fetcher->Shutdown();
}

}  // namespace

Fetcher* Fetcher::Get(std::string* error) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_fetcher == nullptr) {
    if (!Curl().ok) return *error = Curl().error, nullptr;
    auto* f = new Fetcher();
    if (!f->Start(error)) {
      delete f;
      return nullptr;
    }
    g_fetcher = f;
    static bool hooks = [] {
      // Registered after curl (and OpenSSL) initialised, so it runs before
      // their own exit handlers.
      std::atexit(ShutdownAtExit);
      // A forked child has no loop thread: it starts its own fetcher.
      pthread_atfork([] { g_mu.lock(); }, [] { g_mu.unlock(); },
                     [] {
                       g_fetcher = nullptr;
                       g_mu.unlock();
                     });
      return true;
    }();
    (void)hooks;
  }
  return g_fetcher;
}

void Fetcher::Submit(std::unique_ptr<Batch> batch) {
  std::lock_guard<std::mutex> lock(mu_);
  WatchCancellation(&batch->waiter, batch->id, &cancels_);
  incoming_.push_back(std::move(batch));
  Wake();
}

void Fetcher::SubmitPooled(std::unique_ptr<Batch> batch, std::unique_ptr<Call> call) {
  std::lock_guard<std::mutex> lock(mu_);
  WatchCancellation(&call->waiter, call->lot, &lot_cancels_);
  incoming_.push_back(std::move(batch));
  incoming_calls_.push_back(std::move(call));
  Wake();
}

void Fetcher::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    stop_ = true;
    Wake();
  }
  if (loop_.joinable()) loop_.join();
  completer_.Stop();
}

// With mu_ held: when `waiter` (of a Batch or a Call) is cancelled, `key` goes
// to `queue` for the loop; a waiter already cancelled is marked so.
void Fetcher::WatchCancellation(Waiter* waiter, uint64_t key, std::vector<uint64_t>* queue) {
  WatchCancel(waiter, [this, key, queue] {
    std::lock_guard<std::mutex> lock(mu_);
    queue->push_back(key);
    Wake();
  });
}

Fetcher::~Fetcher() {
  if (multi_ != nullptr) Curl().multi_cleanup(multi_);
  if (epoll_ >= 0) close(epoll_);
  if (wake_ >= 0) close(wake_);
}

bool Fetcher::Start(std::string* error) {
  const CurlApi& api = Curl();
  if (!api.ok) return *error = api.error, false;
  multi_ = api.multi_init();
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (multi_ == nullptr || epoll_ < 0 || wake_ < 0) return *error = "cannot create curl multi/epoll", false;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_;
  epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &ev);
  api.multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &Fetcher::OnSocket);
  api.multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  api.multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &Fetcher::OnTimer);
  api.multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  completer_.Start();
  loop_ = std::thread([this] { Loop(); });
  pthread_setname_np(loop_.native_handle(), "tfeed-fetch");
  return true;
}

void Fetcher::Wake() {
  uint64_t one = 1;
  ssize_t ignored = write(wake_, &one, sizeof one);
  (void)ignored;
}

// -- curl callbacks (loop thread) -------------------------------------------
// Mirrors libcurl's interest in a socket into the epoll set; the socket's
// "assigned" pointer marks it as registered.
int Fetcher::OnSocket(CURL*, curl_socket_t fd, int what, void* self, void* registered) {
  auto* f = static_cast<Fetcher*>(self);
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(f->epoll_, EPOLL_CTL_DEL, fd, nullptr);
    return 0;
  }
  epoll_event ev{};
  ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
  ev.data.fd = fd;
  if (registered != nullptr) {
    epoll_ctl(f->epoll_, EPOLL_CTL_MOD, fd, &ev);
  } else {
    epoll_ctl(f->epoll_, EPOLL_CTL_ADD, fd, &ev);
    Curl().multi_assign(f->multi_, fd, f);
  }
  return 0;
}

int Fetcher::OnTimer(CURLM*, long timeout_ms, void* self) {
  auto* f = static_cast<Fetcher*>(self);
  f->curl_due_ = timeout_ms < 0 ? Clock::time_point::max() : Clock::now() + std::chrono::milliseconds(timeout_ms);
  return 0;
}

// -- loop ----------------------------------------------------------------------
void Fetcher::Loop() {
  priority_.Begin();
  std::vector<epoll_event> events(256);
  while (true) {
    if (!Intake()) break;
    Clock::time_point now = Clock::now();
    priority_.Check(now);
    FireTimers(now);
    Admit(now);
    if (now >= next_scan_) ScanReadTimeouts(now);
    if (hosts_dirty_ && (now >= next_publish_ || in_flight_ == 0)) {  // at once when all is done
      hosts_.Publish(Since(now));
      hosts_dirty_ = false;
      next_publish_ = now + std::chrono::milliseconds(50);
    }
    RunCurlTimeout();  // libcurl writes the requests Admit added on its timeout action
    Harvest();
    completer_.Flush();  // once the new requests are out (see Completer)
    int n = WaitForEvents(&events, now);
    Dispatch(events, n);
    RunCurlTimeout();
    Harvest();
  }
  Teardown();
}

// Hands socket readiness to libcurl (the eventfd only wakes the loop).
void Fetcher::Dispatch(const std::vector<epoll_event>& events, int n) {
  int running = 0;
  for (int i = 0; i < n; ++i) {
    int fd = events[i].data.fd;
    if (fd == wake_) {
      uint64_t value;
      ssize_t ignored = read(wake_, &value, sizeof value);
      (void)ignored;
      continue;
    }
    int flags = (events[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                (events[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                (events[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    Curl().multi_socket_action(multi_, fd, flags, &running);
  }
}

void Fetcher::RunCurlTimeout() {
  Clock::time_point due = curl_due_;
  if (Clock::now() < due) return;
  int running = 0;
  Curl().multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
  // libcurl calls OnTimer only when its next expiry changes; if its
  // clock had not reached the expiry yet, ask again shortly.
  if (curl_due_ == due) curl_due_ = Clock::now() + std::chrono::milliseconds(1);
}

// New batches and cancellations; false once stopping.
bool Fetcher::Intake() {
  std::vector<std::unique_ptr<Batch>> incoming;
  std::vector<std::unique_ptr<Call>> calls;
  std::vector<uint64_t> cancels, lot_cancels;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return false;
    incoming.swap(incoming_);
    calls.swap(incoming_calls_);
    cancels.swap(cancels_);
    lot_cancels.swap(lot_cancels_);
  }
  for (auto& batch : incoming) AcceptBatch(std::move(batch));
  for (uint64_t id : cancels) {
    auto it = batches_.find(id);
    if (it != batches_.end()) CancelBatch(it->second.get());
  }
  for (auto& call : calls) AcceptCall(std::move(call), &lot_cancels);
  for (uint64_t id : lot_cancels) CancelLotNow(id);
  return true;
}

void Fetcher::AcceptBatch(std::unique_ptr<Batch> batch) {
  Batch* b = batch.get();
  ApplyLimits(*b->opt);
  if (b->lot != 0) ++lots_[b->lot].batches;
  batches_[b->id] = std::move(batch);
  if (b->waiter.cancelled) return CancelBatch(b);
  const double now = Since(Clock::now());
  for (int64_t i = 0; i < b->size; ++i) {
    Transfer* t = &b->transfers[i];
    if (t->state != State::kQueued) continue;  // answered by the kernel (cache, file://, invalid)
    t->host = hosts_.Find(t->url, *b->opt, now);
    hosts_.Put(t->host, Ref{b->id, i});
    hosts_dirty_ = true;  // its queue grew
  }
}

// A pooled call takes the lot's ready results, then waits for the rest.
void Fetcher::AcceptCall(std::unique_ptr<Call> call, std::vector<uint64_t>* lot_cancels) {
  const uint64_t id = call->lot;
  const bool cancelled = call->waiter.cancelled;
  Lot& lot = lots_[id];
  while (call->filled < call->size && !lot.ready.empty()) {
    parked_bytes_ -= static_cast<int64_t>(lot.ready.front().body.size());
    admit_pending_ = true;
    call->Write(std::move(lot.ready.front()));
    lot.ready.pop_front();
  }
  if (call->filled == call->size) FinishCall(std::move(call));
  else lot.waiting.push_back(std::move(call));
  if (cancelled) lot_cancels->push_back(id);
  DropIfIdle(id);
}

void Fetcher::ApplyLimits(const Options& opt) {
  if (opt.connections_per_host != host_limit_) {
    host_limit_ = opt.connections_per_host;
    Curl().multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, static_cast<long>(host_limit_));
  }
  if (opt.max_in_flight > total_limit_) {
    total_limit_ = opt.max_in_flight;
    Curl().multi_setopt(multi_, CURLMOPT_MAX_TOTAL_CONNECTIONS, static_cast<long>(total_limit_));
    Curl().multi_setopt(multi_, CURLMOPT_MAXCONNECTS, static_cast<long>(total_limit_));
  }
}

// How long the loop may sleep: until libcurl's timer, a fetch timer, the read
// timeout scan, a paced host's next start or the next publication of a changed
// host table, whichever is first (-1: no deadline).
// Hosts are judged at `admitted`, the time Admit saw: a host whose pace or pause
// ended between Admit and now still wakes the loop at once.  (Judged at now, such
// a host looked ready, hence "no wakeup", yet Admit had not started it: with nothing
// else pending the loop slept for good, one epoch in ~40 against a host paced at
// 0.5 ms that answered only 429.)
Clock::duration Fetcher::SleepFor(Clock::time_point admitted) {
  if (admit_pending_) return Clock::duration::zero();  // freed during this iteration, after Admit ran
  Clock::time_point until = curl_due_;
  if (!timers_.empty()) until = std::min(until, timers_.top().when);
  if (!active_.empty()) until = std::min(until, next_scan_);
  if (hosts_dirty_) until = std::min(until, next_publish_);  // stats readers see changes within 50 ms
  const double wakeup = hosts_.NextWakeup(Since(admitted));  // a paced or paused host may start again
  if (wakeup >= 0) until = std::min(until, epoch_ + FromSeconds(wakeup));
  if (until == Clock::time_point::max()) return Clock::duration(-1);
  const Clock::time_point now = Clock::now();
  if (until <= now) return Clock::duration::zero();
  return std::min<Clock::duration>(until - now, std::chrono::seconds(60));
}

// Sleeps in epoll until a socket is ready or SleepFor's deadline.  epoll_pwait2
// takes the deadline to the microsecond; epoll_wait's whole milliseconds, rounded
// up, started a paced host's requests 0.5 ms late on average (10% of a 5 ms gap,
// nginx limit_req 200 r/s), and unevenly, which its rate limit answers with 429.
int Fetcher::WaitForEvents(std::vector<epoll_event>* events, Clock::time_point admitted) {
  const Clock::duration sleep = SleepFor(admitted);
  const int capacity = static_cast<int>(events->size());
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
  if (precise_wait_) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(sleep).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    const int n = epoll_pwait2(epoll_, events->data(), capacity, ns < 0 ? nullptr : &ts, nullptr);
    if (n >= 0 || errno != ENOSYS) return n;
    precise_wait_ = false;  // a kernel older than 5.11
  }
#endif
  const double ms = std::chrono::duration<double, std::milli>(sleep).count();
  return epoll_wait(epoll_, events->data(), capacity, ms < 0 ? -1 : static_cast<int>(std::ceil(ms)));
}

void Fetcher::Teardown() {
  for (Transfer* t : std::vector<Transfer*>(active_)) ReleaseEasy(t);
  for (CURL* e : free_easy_) Curl().easy_cleanup(e);
  free_easy_.clear();
  Curl().multi_cleanup(multi_);
  multi_ = nullptr;
  close(epoll_);
  close(wake_);
  epoll_ = wake_ = -1;
}

}  // namespace fetch
}  // namespace tfeed
