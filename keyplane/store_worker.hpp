// A thread with a store connection of its own, for the database work the
// event loop must not wait on: a commit's fsync, a lock held by another
// session, a network round trip per statement. The loop posts jobs (a
// callable on the worker's Store); each runs on the worker, one at a time in
// the order posted, and its completion is posted back to the loop's
// io_context. The worker's Store is touched by the worker thread only.
#pragma once
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>  // before Boost.Asio (Boost 1.74, GCC 12, C++20)
#include <boost/asio/io_context.hpp>

#include "keyplane/store.hpp"

namespace keycast::kp {

class StoreWorker {
 public:
  using Job = std::function<void(Store&)>;
  // Called on the loop; the exception the job threw, if any.
  using Done = std::function<void(std::exception_ptr)>;

  StoreWorker(std::unique_ptr<Store> store, boost::asio::io_context& loop);
  ~StoreWorker();  // stop()
  StoreWorker(const StoreWorker&) = delete;
  StoreWorker& operator=(const StoreWorker&) = delete;

  // Queues job; done (if any) is posted to the loop after it ran. After
  // stop() nothing is queued and done is never called.
  void post(Job job, Done done = {});
  // Queues job and blocks the caller until it ran, rethrowing what it threw:
  // every job posted before it has run too. Not from the worker's own jobs.
  // Throws std::runtime_error once stopped.
  void run(Job job);
  // Runs the jobs already queued, then ends the thread and joins it; the
  // store is closed with the worker.
  void stop();

 private:
  void loop();
  std::unique_ptr<Store> store_;
  boost::asio::io_context& io_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Job, Done>> q_;
  bool stopping_ = false;
  std::thread th_;
};

}  // namespace keycast::kp
