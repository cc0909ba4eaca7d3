// The fetcher's transfers: admission, easy-handle setup and reuse, libcurl's
// transfer callbacks, read timeouts, and what happens when an attempt ends
// (classify, then succeed, retry after a backoff, or fail).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "contract.h"
#include "address_policy.h"
#include "fetcher.h"
#include "sniff.h"

namespace tfeed {
namespace fetch {
namespace {

namespace c = ::tfeed::contract;
constexpr curl_off_t kMaxReserve = 4 << 20;

Verdict Failed(const char* reason, std::string detail) {
  Verdict v;
  v.reason = reason;
  v.detail = std::move(detail);
  return v;
}

}  // namespace

// -- curl callbacks (loop thread) -------------------------------------------
size_t Fetcher::OnWrite(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * count;
  t->last_activity = Clock::now();
  const Options& opt = *t->batch->opt;
  if (!t->status_checked) {
    t->status_checked = true;
    long status = 0;
    Curl().easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    t->discard = status >= 400 || t->opted_out;  // error pages and opted-out images are not kept
    curl_off_t length = -1;
    if (!t->discard && Curl().easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length) == CURLE_OK &&
        length > 0) {
      // A Content-Length is the server's claim: reserve at most kMaxReserve on its word.
      t->body.reserve(static_cast<size_t>(std::min<curl_off_t>({length, opt.max_bytes, kMaxReserve})));
    }
  }
  if (t->discard) return n;
  if (static_cast<int64_t>(t->body.size() + n) > opt.max_bytes) {
    t->too_large = true;
    return 0;  // aborts with CURLE_WRITE_ERROR
  }
  t->body.append(data, n);
  return n;
}

size_t Fetcher::OnHeader(char* line, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  t->last_activity = Clock::now();
  if (!t->batch->opt->respect_opt_out) return n;
  if (n > 5 && std::strncmp(line, "HTTP/", 5) == 0) t->opted_out = false;  // a new response (after a redirect)
  else if (HeaderOptsOut(line, n)) t->opted_out = true;
  return n;
}

int Fetcher::OnConnected(void* user, char* primary_ip, char*, int, int) {
  auto* t = static_cast<Transfer*>(user);
  // A pooled connection opened for a transfer with another policy: checked before any request.
  const DeniedNetwork* denied = DeniedByText(primary_ip, t->batch->opt->deny_networks);
  if (denied != nullptr) {
    t->blocked = BlockedDetail(primary_ip != nullptr ? primary_ip : "?", *denied);
    return 1;  // CURL_PREREQFUNC_ABORT
  }
  t->connected = true;
  t->last_activity = Clock::now();
  return 0;  // CURL_PREREQFUNC_OK
}

// -- admission and handles ---------------------------------------------------
Transfer* Fetcher::Resolve(const Ref& ref) {
  auto it = batches_.find(ref.batch);
  return it == batches_.end() ? nullptr : &it->second->transfers[ref.index];
}

// Starts queued URLs while slots are free: hosts in turn, each within its
// limiter's window, pace and pause, oldest URL first within a host.  A URL
// holds its slot from its first attempt until it is done (backoff included)
// or its host sheds it (then it queues again).
void Fetcher::Admit(Clock::time_point now) {
  admit_pending_ = false;
  GiveUpThrottled(now);
  Ref ref;
  const int64_t held = HeldBytes();  // a new transfer holds nothing yet: constant through this loop
  while (in_flight_ < total_limit_) {
    Host* host = hosts_.NextReady(Since(now), &ref);
    if (host == nullptr) break;
    Transfer* t = Resolve(ref);
    if (t == nullptr || t->state != State::kQueued) continue;
    // Its own config's caps; with nothing in flight one transfer always starts, so
    // batches waiting for their last URLs always finish and release their bytes.
    const bool over_bytes = in_flight_ > 0 && held >= t->batch->opt->max_in_flight_bytes;
    if (in_flight_ >= t->batch->opt->max_in_flight || over_bytes) {
      hosts_.Put(host, ref, /*front=*/true);
      break;
    }
    ++in_flight_;
    hosts_dirty_ = true;
    t->ticket = host->limiter.Start(Since(now));
    t->state = State::kWaiting;  // holds a slot from here on
    t->deadline = now + FromSeconds(t->batch->opt->deadline);
    StartAttempt(t, now);
  }
}

// Body bytes held: partial bodies of running transfers, and finished ones not yet returned.
int64_t Fetcher::HeldBytes() const {
  int64_t held = parked_bytes_;
  for (const Transfer* t : active_) held += static_cast<int64_t>(t->body.size());
  return held;
}

// URLs of hosts that answered nothing but overload for longer than their patience.
void Fetcher::GiveUpThrottled(Clock::time_point now) {
  std::vector<Ref> given_up;
  hosts_.GiveUpThrottled(Since(now), &given_up);
  for (const Ref& ref : given_up) {
    Transfer* t = Resolve(ref);
    if (t == nullptr || t->state != State::kQueued) continue;
    const double patience = t->batch->opt->host_patience;
    t->host = nullptr;  // its host hears nothing more of it
    Complete(t, Failed(c::kRateLimited, "host answered only overload for > " + FormatSeconds(patience) + "s"));
  }
}

void Fetcher::FireTimers(Clock::time_point now) {
  while (!timers_.empty() && timers_.top().when <= now) {
    Ref ref = timers_.top().ref;
    timers_.pop();
    Transfer* t = Resolve(ref);
    if (t != nullptr && t->state == State::kWaiting) StartAttempt(t, now);
  }
}

CURL* Fetcher::AcquireEasy() {
  if (!free_easy_.empty()) {
    CURL* e = free_easy_.back();
    free_easy_.pop_back();
    return e;
  }
  return Curl().easy_init();
}

void Fetcher::ReleaseEasy(Transfer* t) {
  if (t->easy == nullptr) return;
  Curl().multi_remove_handle(multi_, t->easy);
  Curl().easy_reset(t->easy);
  free_easy_.push_back(t->easy);
  t->easy = nullptr;
  RemoveActive(t);
}

void Fetcher::StartAttempt(Transfer* t, Clock::time_point now) {
  const Options& opt = *t->batch->opt;
  long left_ms = static_cast<long>(std::ceil(Seconds(t->deadline - now) * 1000));
  ++t->attempts;
  if (left_ms <= 0) return Complete(t, Failed(c::kTimeout, "deadline of " + FormatSeconds(opt.deadline) + "s passed"));
  CURL* e = AcquireEasy();
  if (e == nullptr) return Complete(t, Failed(c::kConnection, "curl_easy_init failed"));
  t->easy = e;
  t->state = State::kActive;
  t->body.clear();
  t->too_large = t->status_checked = t->discard = t->read_timed_out = t->opted_out = false;
  t->errbuf[0] = 0;
  t->blocked.clear();
  t->last_activity = t->attempt_began = now;
  ConfigureHandle(e, t, left_ms, now);
  if (!ConfineProtocols(e, opt.protocols)) {  // fail closed: never a transfer that could follow ftp:// or gopher://
    ReleaseEasy(t);
    return Complete(t, Failed(c::kInvalidUrl, "this libcurl cannot restrict redirects to " + opt.protocols));
  }
  t->active_pos = active_.size();
  active_.push_back(t);
  if (Curl().multi_add_handle(multi_, e) != CURLM_OK) {
    ReleaseEasy(t);
    return Complete(t, Failed(c::kConnection, "curl_multi_add_handle failed"));
  }
}

// The options of one attempt: the FetchConfig's limits, TLS and proxy settings.
void Fetcher::ConfigureHandle(CURL* e, Transfer* t, long left_ms, Clock::time_point now) {
  const Options& opt = *t->batch->opt;
  const CurlApi& api = Curl();
  api.easy_setopt(e, CURLOPT_URL, t->url.c_str());
  api.easy_setopt(e, CURLOPT_PRIVATE, static_cast<void*>(t));
  api.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  api.easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
  api.easy_setopt(e, CURLOPT_WRITEFUNCTION, &Fetcher::OnWrite);
  api.easy_setopt(e, CURLOPT_WRITEDATA, static_cast<void*>(t));
  api.easy_setopt(e, CURLOPT_HEADERFUNCTION, &Fetcher::OnHeader);
  api.easy_setopt(e, CURLOPT_HEADERDATA, static_cast<void*>(t));
  api.easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  api.easy_setopt(e, CURLOPT_MAXREDIRS, static_cast<long>(opt.max_redirects));
  const double connect = t->host != nullptr ? t->host->limiter.ConnectTimeout(opt.connect_timeout) : opt.connect_timeout;
  api.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, std::max(1L, static_cast<long>(connect * 1000)));
  api.easy_setopt(e, CURLOPT_TIMEOUT_MS, left_ms);
  api.easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
  api.easy_setopt(e, CURLOPT_BUFFERSIZE, 64L * 1024);  // fewer reads and callbacks per image
  api.easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(opt.max_bytes));
  api.easy_setopt(e, CURLOPT_DNS_CACHE_TIMEOUT, static_cast<long>(opt.dns_cache_ttl));
  api.easy_setopt(e, CURLOPT_USERAGENT, opt.user_agent.c_str());
  if (!opt.deny_networks.empty()) {
    api.easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &OpenCheckedSocket);
    api.easy_setopt(e, CURLOPT_OPENSOCKETDATA, static_cast<void*>(t));
  }
  if (!opt.ca_file.empty()) api.easy_setopt(e, CURLOPT_CAINFO, opt.ca_file.c_str());
  if (!opt.verify_tls) {
    api.easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    api.easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (!opt.trust_env) {
    api.easy_setopt(e, CURLOPT_PROXY, "");  // ignore *_proxy variables
  } else {
    api.easy_setopt(e, CURLOPT_NETRC, static_cast<long>(CURL_NETRC_OPTIONAL));
  }
  bool have_prereq = api.easy_setopt(e, kOptPrereqFunction, &Fetcher::OnConnected) == CURLE_OK;
  api.easy_setopt(e, kOptPrereqData, static_cast<void*>(t));
  // Without the connected signal (libcurl < 7.80) the read clock starts
  // after the connect allowance.
  t->connected = !have_prereq;
  if (!have_prereq) t->last_activity = now + FromSeconds(opt.connect_timeout);
}

void Fetcher::RemoveActive(Transfer* t) {
  if (t->active_pos < active_.size() && active_[t->active_pos] == t) {
    Transfer* last = active_.back();
    active_[t->active_pos] = last;
    last->active_pos = t->active_pos;
    active_.pop_back();
  }
  t->active_pos = static_cast<size_t>(-1);
}

// -- ends of attempts ----------------------------------------------------------
void Fetcher::Harvest() {
  CURLMsg* msg;
  int left;
  while ((msg = Curl().multi_info_read(multi_, &left)) != nullptr) {
    if (msg->msg != CURLMSG_DONE) continue;
    void* priv = nullptr;
    Curl().easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
    Finish(static_cast<Transfer*>(priv), msg->data.result);
  }
}

// Aborts attempts that received nothing for read_timeout seconds.
void Fetcher::ScanReadTimeouts(Clock::time_point now) {
  std::vector<Transfer*> expired;
  Clock::time_point next = now + std::chrono::milliseconds(100);
  for (Transfer* t : active_) {
    if (!t->connected) continue;
    Clock::time_point due = t->last_activity + FromSeconds(t->batch->opt->read_timeout);
    if (due <= now) expired.push_back(t);
    else next = std::min(next, due);
  }
  next_scan_ = next;
  for (Transfer* t : expired) {
    t->read_timed_out = true;
    Finish(t, CURLE_OPERATION_TIMEDOUT);
  }
}

// What classify needs to know of an attempt that ended with `rc`, read from its handle.
AttemptEnd Fetcher::Observe(Transfer* t, CURLcode rc) {
  const CurlApi& api = Curl();
  AttemptEnd end;
  end.curl_code = rc;
  t->multiplexed = false;
  end.too_large = t->too_large;
  end.read_timed_out = t->read_timed_out;
  end.opted_out = t->opted_out;
  end.error = t->errbuf[0] ? t->errbuf : api.easy_strerror(rc);
  end.blocked = t->blocked;
  end.connect_timed_out = rc == CURLE_OPERATION_TIMEDOUT && !t->connected && !t->read_timed_out;
  if (end.read_timed_out || rc != CURLE_OK) return end;
  api.easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &end.status);
  long version = 0;
  t->multiplexed = api.easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version) == CURLE_OK &&
                   version >= CURL_HTTP_VERSION_2_0;
  curl_off_t after = -1;
  if (end.status >= 400 && api.easy_getinfo(t->easy, kInfoRetryAfter, &after) == CURLE_OK && after > 0) {
    end.retry_after = after;
  }
  return end;
}

// An attempt ended: succeed, schedule a retry, or fail for good.
void Fetcher::Finish(Transfer* t, CURLcode rc) {
  const Options& opt = *t->batch->opt;
  const AttemptEnd end = Observe(t, rc);
  if (t->host != nullptr && end.connect_timed_out) t->host->limiter.ConnectMissed(t->ticket);
  Verdict v = Classify(end, opt);
  ReleaseEasy(t);
  Clock::time_point now = Clock::now();
  if (!v.ok && Requeue(t, end, now)) return;
  if (v.ok) return Complete(t, CheckImage(t->body.data(), t->body.size(), opt.pass_transcodable, opt.max_pixels));
  if (!v.retryable || t->attempts > opt.retries) return FailFinally(t, std::move(v), now);
  const double ceiling = c::BackoffCeiling(t->attempts, opt.backoff, opt.max_backoff);
  const double fixed = ceiling * c::kBackoffFixedShare;  // "equal jitter": fixed, plus a uniform draw
  double delay = fixed + std::uniform_real_distribution<double>(0, ceiling - fixed)(rng_);
  if (v.retry_after >= 0) delay = std::max(delay, v.retry_after);
  Clock::time_point when = now + FromSeconds(delay);
  if (when >= t->deadline) return FailFinally(t, std::move(v), now);
  t->state = State::kWaiting;
  t->body.clear();
  timers_.push(Timer{when, Ref{t->batch->id, t->slot}});
}

// The host shed this attempt (429, 503, a refused or reset connection, a
// connect timeout): with adaptive windows the URL goes back to the end of
// its host's queue, its retry budget untouched, and the host's limiter slows
// or pauses the host (tfeed/fetching/limiter.py).  A host that never answered
// is down, not busy: its refusals fail as usual.
bool Fetcher::Requeue(Transfer* t, const AttemptEnd& end, Clock::time_point now) {
  Host* host = t->host;
  if (host == nullptr || !host->adaptive || t->sheds >= c::kShedsPerUrl || !end.blocked.empty()) return false;
  const bool status_overload = end.curl_code == CURLE_OK && (end.status == 429 || end.status == 503);
  const bool connection_overload =
      end.curl_code == CURLE_COULDNT_CONNECT || end.curl_code == CURLE_RECV_ERROR ||
      end.curl_code == CURLE_SEND_ERROR || end.curl_code == CURLE_GOT_NOTHING ||
      end.connect_timed_out;
  if (!status_overload && !(connection_overload && host->answered)) return false;
  ++host->requests;
  hosts_dirty_ = true;
  host->limiter.Overloaded(t->ticket, Since(now), status_overload ? end.status : 0,
                           status_overload ? end.retry_after : -1, rng_);
  --in_flight_;
  admit_pending_ = true;  // the URL may start again at once: shed after Admit ran, it must not wait for an event
  --t->attempts;  // shed, not tried
  const int64_t answered = host->images + host->failures;
  if (t->answered_mark >= 0 && t->answered_mark < answered) ++t->sheds;
  t->answered_mark = answered;
  t->state = State::kQueued;
  t->body.clear();
  hosts_.Put(host, Ref{t->batch->id, t->slot});  // at the end: a URL the host keeps refusing blocks no other
  return true;
}

// A transfer of an admitted URL ended for good (an image, or a failure that
// says nothing of the host's load): the host's counters and limiter hear it.
void Fetcher::TellHost(Transfer* t, bool image, Clock::time_point now) {
  Host* host = t->host;
  if (host == nullptr) return;
  t->host = nullptr;
  hosts_dirty_ = true;
  host->requests += t->attempts;
  if (image || t->connected) host->answered = true;  // a refusal is no answer: the host may be down
  ++(image ? host->images : host->failures);
  host->limiter.Succeeded(t->ticket, Seconds(now - t->attempt_began), Since(now), t->multiplexed);
}

// No retry: a timeout past the URL's deadline says so.
void Fetcher::FailFinally(Transfer* t, Verdict v, Clock::time_point now) {
  if (v.reason == c::kTimeout && now >= t->deadline) {
    v.detail = "deadline of " + FormatSeconds(t->batch->opt->deadline) + "s passed";
  }
  Complete(t, std::move(v));
}

}  // namespace fetch
}  // namespace tfeed
