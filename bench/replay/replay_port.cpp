// Benchmark input device, loaded with LD_PRELOAD into an unchanged DPDK application
// (keycast-recv, ipsec-secgw): after the application's rte_eal_init it adds one more ethdev
// whose RX hands out, once each and without a copy, the frames of a capture preloaded into
// mbufs - what a NIC that has already written N frames into host memory gives its driver.
//
// Why: net_pcap (infinite_rx) copies every frame on the polling core; over a capture large
// enough to hold only distinct packets (the receiver's replay window is on) that copy reads
// DRAM and costs more than the decipherment, so it measured the device, not the receiver.
// Both applications see exactly the same device, so their figures compare.
//
// Environment:
//   KC_REPLAY_PCAP  capture to preload (required; without it the shim does nothing)
//   KC_REPLAY_OUT   JSON written once the pass is over (packets, TSC cycles, thread CPU ns)
//   KC_REPLAY_FLUSH 1 (default): flush the frames from the CPU caches after loading, so the
//                   pass starts as after a DMA that bypassed them; 0: leave them
// The new port gets the next free port id (after the --vdev ports), one RX and one TX queue
// (TX goes to a sink ring nobody reads). The pass is timed on the polling thread, from its first
// non-empty RX to its first empty RX after the last frame (the application has finished with
// every frame by then): TSC cycles and the thread's CPU time, so a descheduled worker is seen.
#include <dlfcn.h>
#include <pcap/pcap.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <emmintrin.h>

namespace {

struct Pass {
  uint64_t total = 0;   // frames preloaded
  uint64_t handed = 0;  // frames given to the application so far
  uint64_t tsc0 = 0, tsc1 = 0;
  uint64_t cpu0 = 0, cpu1 = 0;
  bool done = false;
  const char* out = nullptr;
};
Pass g_pass;

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

void write_result() {
  const double cycles = double(g_pass.tsc1 - g_pass.tsc0);
  const double hz = double(rte_get_tsc_hz());
  const double cpu_s = double(g_pass.cpu1 - g_pass.cpu0) / 1e9;
  std::fprintf(stderr, "kc_replay: %llu frames in %.0f TSC cycles (%.1f per frame), thread on CPU %.4f s\n",
               (unsigned long long)g_pass.total, cycles, cycles / double(g_pass.total), cpu_s);
  if (!g_pass.out) return;
  FILE* f = std::fopen(g_pass.out, "w");
  if (!f) {
    std::fprintf(stderr, "kc_replay: cannot write %s\n", g_pass.out);
    return;
  }
  std::fprintf(f,
               "{\"packets\": %llu, \"tsc_cycles\": %.0f, \"tsc_hz\": %.0f, \"wall_s\": %.6f, "
               "\"cpu_s\": %.6f, \"cycles_per_pkt_tsc\": %.2f, \"cycles_per_pkt_cpu\": %.2f}\n",
               (unsigned long long)g_pass.total, cycles, hz, cycles / hz, cpu_s,
               cycles / double(g_pass.total), cpu_s * hz / double(g_pass.total));
  std::fclose(f);
}

// Runs on the polling thread after every rx_burst of the replay port.
uint16_t on_rx(uint16_t, uint16_t, rte_mbuf*[], uint16_t n, uint16_t, void*) {
  if (g_pass.done) return n;
  if (n) {
    if (g_pass.handed == 0) {
      g_pass.tsc0 = rte_rdtsc();
      g_pass.cpu0 = thread_cpu_ns();
    }
    g_pass.handed += n;
  } else if (g_pass.handed == g_pass.total && g_pass.total) {
    g_pass.tsc1 = rte_rdtsc();
    g_pass.cpu1 = thread_cpu_ns();
    g_pass.done = true;
    write_result();  // once per run, after the pass: the only system calls this shim makes on the worker
  }
  return n;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "kc_replay: %s\n", what);
  std::exit(1);
}

void add_replay_port(const char* path) {
  char err[PCAP_ERRBUF_SIZE];
  pcap_t* p = pcap_open_offline(path, err);
  if (!p) fail(err);
  // Count first: the ring and the pool are sized to the capture.
  unsigned n = 0, maxlen = 0;
  pcap_pkthdr* h;
  const u_char* data;
  while (pcap_next_ex(p, &h, &data) == 1) {
    ++n;
    if (h->caplen > maxlen) maxlen = h->caplen;
  }
  pcap_close(p);
  if (n == 0) fail("KC_REPLAY_PCAP holds no frames");
  if (maxlen > RTE_MBUF_DEFAULT_DATAROOM) fail("a frame is larger than an mbuf");

  // Standard 2 KiB data room, as a NIC driver's pool: the frames' spacing in memory is a NIC's.
  rte_mempool* pool = rte_pktmbuf_pool_create("kc_replay_pool", n + 2048, 256, 0,
                                              RTE_MBUF_DEFAULT_BUF_SIZE, int(rte_socket_id()));
  if (!pool) fail("cannot create the mbuf pool (raise the EAL -m)");
  rte_ring* rx = rte_ring_create("kc_replay_rx", rte_align32pow2(n + 1), int(rte_socket_id()),
                                 RING_F_SP_ENQ | RING_F_SC_DEQ);
  rte_ring* tx = rte_ring_create("kc_replay_tx", 1024, int(rte_socket_id()), RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (!rx || !tx) fail("cannot create the rings");

  p = pcap_open_offline(path, err);
  if (!p) fail(err);
  while (pcap_next_ex(p, &h, &data) == 1) {
    rte_mbuf* m = rte_pktmbuf_alloc(pool);
    if (!m) fail("mbuf pool exhausted");
    char* dst = rte_pktmbuf_append(m, uint16_t(h->caplen));
    if (!dst) fail("frame does not fit an mbuf");
    std::memcpy(dst, data, h->caplen);
    if (rte_ring_enqueue(rx, m) != 0) fail("ring full");
  }
  pcap_close(p);

  const char* flush = std::getenv("KC_REPLAY_FLUSH");
  if (!flush || std::strcmp(flush, "0") != 0) {
    // Evict every frame (mbuf header and data) so the pass does not start with the last frames
    // loaded still in the LLC.
    void* objs[64];
    unsigned left = rte_ring_count(rx);
    for (unsigned i = 0; i < left; i += 64) {
      const unsigned k = rte_ring_dequeue_bulk(rx, objs, std::min(64u, left - i), nullptr);
      for (unsigned j = 0; j < k; ++j) {
        auto* m = static_cast<rte_mbuf*>(objs[j]);
        const auto* b = static_cast<const char*>(m->buf_addr);
        for (unsigned o = 0; o < m->buf_len; o += 64) _mm_clflush(b + o);
        _mm_clflush(m);
        _mm_clflush(reinterpret_cast<const char*>(m) + 64);
      }
      rte_ring_enqueue_bulk(rx, objs, k, nullptr);
    }
    _mm_mfence();
  }

  const int port = rte_eth_from_rings("kc_replay", &rx, 1, &tx, 1, rte_socket_id());
  if (port < 0) fail("rte_eth_from_rings failed");
  if (!rte_eth_add_rx_callback(uint16_t(port), 0, on_rx, nullptr)) fail("cannot add the RX callback");
  g_pass.total = n;
  g_pass.out = std::getenv("KC_REPLAY_OUT");
  std::fprintf(stderr, "kc_replay: port %d holds %u frames of %s (up to %u bytes)\n", port, n, path, maxlen);
}

}  // namespace

extern "C" int rte_eal_init(int argc, char** argv) {
  using Fn = int (*)(int, char**);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "rte_eal_init"));
  if (!real) fail("rte_eal_init not found (is the application linked with DPDK's shared libraries?)");
  const int r = real(argc, argv);
  const char* path = std::getenv("KC_REPLAY_PCAP");
  if (r >= 0 && path && *path) add_replay_port(path);
  return r;
}
