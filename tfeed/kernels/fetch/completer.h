// Runs done callbacks off the network thread: TensorFlow may run the rest of
// a function inline in them.  Callbacks posted during one loop iteration wake
// the thread once, at the loop's Flush, after the loop has sent its new
// requests.  Woken at each Post, the thread preempted the loop between reading
// responses and sending the requests that reuse their slots, and without
// real-time priority the loop then waited behind the decode threads it had
// just fed.  One host serving 64 at a time at 100 ms, the client on one core:
// a slot sat idle 16-18 ms at the median between a response and the next
// request, 505-515 images/s; with one wake per iteration 1.8-1.9 ms and
// 572-577/s (a real-time loop: 571/s).

#ifndef TFEED_KERNELS_FETCH_COMPLETER_H_
#define TFEED_KERNELS_FETCH_COMPLETER_H_

#include <pthread.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>

namespace tfeed {
namespace fetch {

class Completer {
 public:
  void Start() {
    thread_ = std::thread([this] { Run(); });
    pthread_setname_np(thread_.native_handle(), "tfeed-done");
  }
  ~Completer() { Stop(); }
  // Queues `fn`; it runs after the next Flush (or at once, if the thread is busy).
  void Post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(fn));
    posted_ = true;
  }
  // Wakes the thread for what was posted since the last Flush.  Only the loop
  // thread posts and flushes, so `posted_` needs no lock.
  void Flush() {
    if (!posted_) return;
    posted_ = false;
    cv_.notify_one();
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      auto fn = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  bool posted_ = false;  // loop thread only
  std::thread thread_;
};

}  // namespace fetch
}  // namespace tfeed

#endif  // TFEED_KERNELS_FETCH_COMPLETER_H_
