// Statistics: per-worker counters (single writer, read by control and the
// telemetry thread with relaxed loads), aggregation into named figures, the
// final JSON (--stats-json) and DPDK telemetry commands.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace keycast::dp {

// A counter with one writer: add is a relaxed load + store (a plain add on
// x86, no locked instruction), reads from other threads are untorn.
struct Counter {
  std::atomic<uint64_t> v{0};
  void add(uint64_t n = 1) noexcept {
    v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void set(uint64_t n) noexcept { v.store(n, std::memory_order_relaxed); }
  uint64_t get() const noexcept { return v.load(std::memory_order_relaxed); }
};

// One figure: either an integer, a real, or a list of integers.
struct Figure {
  std::string name;
  enum Kind { Int, Real, List, Records } kind = Int;
  uint64_t i = 0;
  double d = 0;
  std::vector<uint64_t> list;
  std::vector<std::vector<Figure>> records;  // Records: a list of objects (e.g. one per channel)
  static Figure integer(std::string n, uint64_t v) { return Figure{std::move(n), Int, v, 0, {}, {}}; }
  static Figure real(std::string n, double v) { return Figure{std::move(n), Real, 0, v, {}, {}}; }
  static Figure ints(std::string n, std::vector<uint64_t> v) {
    return Figure{std::move(n), List, 0, 0, std::move(v), {}};
  }
  static Figure objects(std::string n, std::vector<std::vector<Figure>> v) {
    return Figure{std::move(n), Records, 0, 0, {}, std::move(v)};
  }
};
using Figures = std::vector<Figure>;

// The figure called name (the first one), or nullptr.
const Figure* find_figure(const Figures& f, const std::string& name);
// Its integer value; throws std::logic_error if there is no such integer
// figure (a renamed figure is a bug, not a zero).
uint64_t figure_int(const Figures& f, const std::string& name);

// {"a": 1, "drops": {"x": 2}, ...}: figures whose name is "group.key" are
// nested one level under "group".
std::string figures_json(const Figures& f);
// Writes atomically (temp file + rename). Throws on failure.
void write_file(const std::string& path, const std::string& text);

// Registers a DPDK telemetry command returning the figures as a dict (lists
// as arrays, nested names flattened with '.'). Safe to call once per command.
void telemetry_register(const char* cmd, std::function<Figures()> fn, const char* help);
// The same for a command with a parameter ("/keycast/channel,7"): fn gets it
// ("" if none) and returns no figures for a bad one (the command answers an error).
void telemetry_register_param(const char* cmd, std::function<Figures(const std::string&)> fn,
                              const char* help);
// DPDK cannot unregister a command: this detaches the function (the command
// then answers null), so nothing runs against state that is being destroyed.
void telemetry_detach(const char* cmd);

std::string human_rate(double per_sec);  // 12.3k, 4.56M

struct PortCounters;
// "port": {rx_missed, rx_nombuf, rx_errors, tx_errors} in the final JSON.
void add_port_figures(Figures& f, const PortCounters& c);

}  // namespace keycast::dp
