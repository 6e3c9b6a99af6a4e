#include "keyplane/store_worker.hpp"

#include <future>
#include <stdexcept>

#include <boost/asio/post.hpp>

namespace keycast::kp {

StoreWorker::StoreWorker(std::unique_ptr<Store> store, boost::asio::io_context& loop)
    : store_(std::move(store)), io_(loop), th_([this] { this->loop(); }) {}

StoreWorker::~StoreWorker() { stop(); }

void StoreWorker::post(Job job, Done done) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return;
    q_.emplace_back(std::move(job), std::move(done));
  }
  cv_.notify_one();
}

void StoreWorker::run(Job job) {
  auto ran = std::make_shared<std::promise<void>>();
  auto fut = ran->get_future();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) throw std::runtime_error("store worker stopped");
    // The promise is kept by the worker, not the loop: run() may be the
    // loop itself, blocked here.
    q_.emplace_back(
        [job = std::move(job), ran](Store& s) {
          try {
            job(s);
            ran->set_value();
          } catch (...) {
            ran->set_exception(std::current_exception());
          }
        },
        Done{});
  }
  cv_.notify_one();
  fut.get();
}

void StoreWorker::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (th_.joinable()) th_.join();
}

void StoreWorker::loop() {
  for (;;) {
    std::pair<Job, Done> j;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [this] { return stopping_ || !q_.empty(); });
      if (q_.empty()) return;  // stopping, and everything queued has run
      j = std::move(q_.front());
      q_.pop_front();
    }
    std::exception_ptr err;
    try {
      j.first(*store_);
    } catch (...) {
      err = std::current_exception();
    }
    // Whatever the job captured is released here, on the worker, before the
    // loop hears of it.
    j.first = nullptr;
    if (j.second) boost::asio::post(io_, [done = std::move(j.second), err] { done(err); });
  }
}

}  // namespace keycast::kp
