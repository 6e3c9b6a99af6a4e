// The store worker: jobs run on its own thread and connection in the order
// posted, their completions come back on the loop, and a fence ordered
// through its queue holds for every later job, on both backends.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "keyplane/store_worker.hpp"
#include "store_backends.hpp"

using namespace kptest;

namespace {

class StoreWorkerJobs : public StoreBackends {};
KP_BOTH_BACKENDS(StoreWorkerJobs);

constexpr int64_t kT0 = 1796083200000;  // 2026-12-01

// Runs io on this thread until n completions have come back (or 20 s).
void run_until(boost::asio::io_context& io, const std::size_t& done, std::size_t n) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (done < n && std::chrono::steady_clock::now() < until) {
    io.restart();
    io.run_for(std::chrono::milliseconds(10));
  }
}

}  // namespace

TEST_P(StoreWorkerJobs, RunInOrderOffTheLoopAndCompleteOnIt) {
  boost::asio::io_context io;
  StoreWorker w(t().open(), io);
  const auto loop_id = std::this_thread::get_id();
  std::vector<int> ran;  // the worker's only
  std::vector<int> completed;  // the loop's only
  std::atomic<bool> off_loop{true};
  std::size_t done = 0;
  bool on_loop = true;
  for (int i = 0; i < 20; ++i)
    w.post(
        [&, i](Store& s) {
          if (std::this_thread::get_id() == loop_id) off_loop = false;
          s.ledger().add_requests("client", 1, kT0);
          ran.push_back(i);
        },
        [&, i](std::exception_ptr e) {
          if (std::this_thread::get_id() != loop_id) on_loop = false;
          EXPECT_FALSE(e);
          completed.push_back(i);
          ++done;
        });
  run_until(io, done, 20);
  ASSERT_EQ(done, 20u);
  EXPECT_TRUE(off_loop);
  EXPECT_TRUE(on_loop);
  std::vector<int> want(20);
  for (int i = 0; i < 20; ++i) want[i] = i;
  EXPECT_EQ(completed, want);
  w.run([](Store&) {});  // orders the read of ran after the worker's writes
  EXPECT_EQ(ran, want);
  // Written through the worker's own connection, seen through another.
  auto rows = t().open()->ledger().billing();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].requests, 20u);

  // run() rethrows what the job threw; stop() runs what is queued, and
  // nothing posted afterwards runs or completes.
  EXPECT_THROW(w.run([](Store&) { throw std::invalid_argument("no"); }), std::invalid_argument);
  int queued = 0;
  w.post([&](Store&) { ++queued; });
  w.stop();
  EXPECT_EQ(queued, 1);
  w.post([&](Store&) { ++queued; }, [&](std::exception_ptr) { ++done; });
  EXPECT_THROW(w.run([](Store&) {}), std::runtime_error);
  io.restart();
  io.poll();
  EXPECT_EQ(queued, 1);
  EXPECT_EQ(done, 20u);
}

// The leader fences the worker's connection through the queue: every job
// posted after it writes under that epoch, and once another master has
// taken over the worker's writes fail with Fenced, booking nothing.
TEST_P(StoreWorkerJobs, AFenceThroughTheQueueHoldsForLaterJobs) {
  boost::asio::io_context io;
  auto loop_store = t().open();
  auto other = t().open();
  StoreWorker w(t().open(), io);
  auto e1 = loop_store->lease().try_lead("a", "a:1", 60000);
  ASSERT_TRUE(e1);
  loop_store->lease().fence(*e1);
  w.run([e = *e1](Store& s) { s.lease().fence(e); });
  std::size_t done = 0;
  std::exception_ptr first, second;
  w.post([](Store& s) { s.ledger().add_requests("client", 1, kT0); }, [&](std::exception_ptr e) { first = e, ++done; });
  run_until(io, done, 1);
  ASSERT_EQ(done, 1u);
  EXPECT_FALSE(first);

  loop_store->lease().release_lead(*e1);
  auto e2 = other->lease().try_lead("b", "b:1", 60000);
  ASSERT_TRUE(e2);
  other->lease().fence(*e2);
  w.post(
      [](Store& s) {
        s.begin();
        try {
          s.ledger().add_requests("client", 1, kT0);
          s.commit();
        } catch (...) {
          s.rollback();
          throw;
        }
      },
      [&](std::exception_ptr e) { second = e, ++done; });
  run_until(io, done, 2);
  ASSERT_EQ(done, 2u);
  ASSERT_TRUE(second);
  EXPECT_THROW(std::rethrow_exception(second), Fenced);
  auto rows = other->ledger().billing();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].requests, 1u);  // the one before the takeover only
}
