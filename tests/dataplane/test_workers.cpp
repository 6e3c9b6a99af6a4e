// The workers' burst paths over in-memory mbufs, without a NIC or root-only
// device: EAL runs with --no-huge and one net_ring port, whose TX ring is its
// own RX ring (a loopback). The sender's bursts are read back from it and
// handed to the receiver's process(); the receiver's drop reasons are each
// provoked by one crafted frame; ingest picks the channel by group:port and
// carries each datagram byte for byte.
#include <gtest/gtest.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "common/aead.hpp"
#include "common/control_msg.hpp"
#include "common/esp.hpp"
#include "common/key_record.hpp"
#include "dataplane/app.hpp"
#include "dataplane/channel.hpp"
#include "dataplane/key_table.hpp"
#include "dataplane/pattern.hpp"
#include "dataplane/rx_worker.hpp"
#include "dataplane/tx_worker.hpp"

using namespace keycast;
using namespace keycast::dp;

namespace {

rte_mempool* g_pool = nullptr;
constexpr uint16_t kPort = 0;  // net_ring0

struct Chan {
  uint32_t id;
  uint32_t group;
  uint16_t port;
};
const std::vector<Chan> kChans = {{7, 0xef010007, 5007}, {9, 0xef010009, 5009}, {11, 0xef01000b, 5011}};

std::vector<ChannelConfig> configs() {
  std::vector<ChannelConfig> v;
  for (auto& c : kChans) {
    ChannelConfig cc;
    cc.id = c.id;
    cc.group = GroupAddr{c.group, c.port};
    v.push_back(cc);
  }
  return v;
}

KeyRecord key_of(uint32_t channel, uint32_t spi) {
  KeyRecord r;
  r.channel = channel;
  r.spi = spi;
  // Deterministic per (channel, SPI): both ends build the same key.
  std::string hex;
  for (int i = 0; i < 20; ++i) {
    char b[3];
    std::snprintf(b, sizeof b, "%02x", (channel * 31 + spi * 7 + i) & 0xff);
    hex += b;
  }
  EXPECT_TRUE(KeyMaterial::from_keymat(hex, r.material));
  r.expires_at = MonoClock::time_point::max();
  return r;
}

// Every channel holds SPI 300 (its own key: SPI spaces are per channel), and
// channel 7 also SPI 301.
void install_keys(KeyPublisher& pub, uint32_t (*tag)(const Chan&), SlotParams p) {
  KeyPublisher::Batch batch(pub);
  for (auto& c : kChans) {
    KeyControl& k = pub.add_channel(c.id, tag(c), p);
    k.add(key_of(c.id, 300));
    k.set_current(300);
    if (c.id == 7) k.add(key_of(7, 301));
    k.publish();
  }
}

esp::Template tmpl_for(uint32_t group, uint16_t port) {
  esp::Flow f;
  f.src_ip = 0x0a000001;
  f.group_ip = group;
  f.dst_port = port;
  return esp::make_template(f);
}

// A frame of `group:port` under channel `key_channel`'s key `spi`: pattern
// payload `index`; `before_seal` may damage the plaintext, `after` the frame.
std::vector<uint8_t> frame(uint32_t group, uint16_t port, uint32_t key_channel, uint32_t spi, uint64_t seq,
                           uint64_t index, uint8_t next_header = esp::kNextUdp, std::size_t plen = 64,
                           std::function<void(uint8_t*)> before_seal = {}) {
  std::vector<uint8_t> f(2048);
  std::size_t inner = esp::kUdpLen + plen;
  if (next_header == esp::kNextUdp || next_header == 99)
    pattern_fill(f.data() + esp::kPayloadOffset, plen, index);
  else
    inner = plen;  // control: raw bytes already there (zeros)
  uint8_t aad[esp::kAadLen];
  AeadOp op{};
  const std::size_t len = esp::prepare(tmpl_for(group, port), spi, seq, next_header, f.data(), inner,
                                       f.size(), aad, op);
  EXPECT_GT(len, 0u);
  if (before_seal) before_seal(f.data());
  Aead aead;
  aead.seal(AeadKey(key_of(key_channel, spi).material), op);
  f.resize(len);
  return f;
}

rte_mbuf* mbuf_of(const std::vector<uint8_t>& f) {
  rte_mbuf* m = rte_pktmbuf_alloc(g_pool);
  EXPECT_NE(m, nullptr);
  std::memcpy(rte_pktmbuf_append(m, static_cast<uint16_t>(f.size())), f.data(), f.size());
  return m;
}

// Everything the loopback port holds now.
std::vector<rte_mbuf*> drain_port() {
  std::vector<rte_mbuf*> out;
  rte_mbuf* b[kMaxBurst];
  for (uint16_t n; (n = rte_eth_rx_burst(kPort, 0, b, kMaxBurst)) > 0;) out.insert(out.end(), b, b + n);
  return out;
}

uint32_t group_tag(const Chan& c) { return c.group; }
uint32_t id_tag(const Chan& c) { return c.id; }

// A receiver of kChans, verifying, one worker (id 0).
struct Receiver {
  KeyTableHolder holder{1};
  ControlEvents events{64};
  KeyPublisher pub{holder};
  RxShared sh;
  std::unique_ptr<RecvWorker> w;
  explicit Receiver(Deliver d = Deliver::Verify) {
    sh.cfg.port = kPort;
    sh.cfg.deliver = d;
    sh.cfg.deliver_port = kPort;
    for (auto& c : kChans) sh.cfg.channels.push_back(RxChannel{c.id, c.group, c.port});
    sh.cfg.groups = GroupIndex(configs());
    sh.holder = &holder;
    sh.events = &events;
    sh.stats.push_back(std::make_unique<RecvWorkerStats>(kChans.size()));
    for (std::size_t i = 0; i < kChans.size(); ++i)
      sh.stats[0]->chan[i].tracker = std::make_unique<DeliveryTracker>(1u << 14);
    install_keys(pub, group_tag, SlotParams{1, 64, 1});
    holder.register_reader(0);
    w = std::make_unique<RecvWorker>(sh, 0);
  }
  ~Receiver() {
    holder.unregister_reader(0);
    holder.synchronize();
  }
  void process(std::vector<rte_mbuf*> v) {
    for (std::size_t i = 0; i < v.size(); i += kMaxBurst) {
      const uint16_t n = static_cast<uint16_t>(std::min<std::size_t>(kMaxBurst, v.size() - i));
      w->process(holder.acquire(), v.data() + i, n, nullptr, 0);
    }
  }
  uint64_t drops(Drop d) const { return sh.stats[0]->drops[static_cast<unsigned>(d)].get(); }
  const RxChannelStats& chan(std::size_t i) const { return sh.stats[0]->chan[i]; }
};

// A sender of kChans, one worker (id 0): generator payloads by channel, or
// ingest from the loopback port.
struct Sender {
  KeyTableHolder holder{1};
  KeyPublisher pub{holder};
  TxShared sh;
  Sender(int ingest_port, uint32_t burst, const std::vector<uint32_t>& payload_of_channel) {
    sh.cfg.port = kPort;
    sh.cfg.ingest_port = ingest_port;
    sh.cfg.burst = burst;
    for (std::size_t i = 0; i < kChans.size(); ++i) {
      const Chan& c = kChans[i];
      const uint32_t plen = payload_of_channel[i];
      auto it = std::find(sh.cfg.payload_sizes.begin(), sh.cfg.payload_sizes.end(), plen);
      const uint32_t slot = static_cast<uint32_t>(it - sh.cfg.payload_sizes.begin());
      if (it == sh.cfg.payload_sizes.end()) sh.cfg.payload_sizes.push_back(plen);
      sh.cfg.channels.push_back(TxChannel{c.id, tmpl_for(c.group, c.port), c.group, c.port, 0, plen, slot});
    }
    sh.cfg.groups = GroupIndex(configs());
    sh.holder = &holder;
    sh.pool = g_pool;
    sh.next_index.reset(new ChannelIndex[kChans.size()]);
    sh.stats.push_back(std::make_unique<SendWorkerStats>(kChans.size()));
    SlotParams sp;
    sp.send_workers = 1;
    install_keys(pub, id_tag, sp);
    holder.register_reader(0);
  }
  ~Sender() {
    holder.unregister_reader(0);
    holder.synchronize();
  }
  const SendWorkerStats& stats() const { return *sh.stats[0]; }
};

}  // namespace

TEST(RecvWorker, EveryDropReasonCountedOnce) {
  Receiver r;
  const uint32_t g7 = kChans[0].group, g9 = kChans[1].group;
  const uint16_t p7 = kChans[0].port, p9 = kChans[1].port;
  std::vector<rte_mbuf*> in;
  auto add = [&](std::vector<uint8_t> f, std::function<void(std::vector<uint8_t>&)> damage = {}) {
    if (damage) damage(f);
    in.push_back(mbuf_of(f));
  };
  // Good: channel 7 (two keys) and channel 9, whose SPI 300 is another key than channel 7's.
  add(frame(g7, p7, 7, 300, 1, 0));
  add(frame(g7, p7, 7, 301, 1, 1));
  add(frame(g9, p9, 9, 300, 1, 0));
  add(frame(g7, p7, 7, 300, 1, 0));                                              // Replay
  add(frame(g9, p9, 7, 300, 2, 1));                                              // AuthFail: channel 7's key on 9's group
  add(frame(g7, p7, 7, 300, 3, 2), [](auto& f) { f[70] ^= 1; });                // AuthFail: ciphertext
  add(frame(g7, p7, 7, 300, 4, 3), [](auto& f) { f[12] = 0x86; f[13] = 0xdd; });  // NotIpv4
  add(frame(g7, p7, 7, 300, 5, 4), [](auto& f) { f[14] = 0x44; });               // BadIpHeader
  add(frame(g7, p7, 7, 300, 6, 5), [](auto& f) { f[20] |= 0x20; });              // Fragment
  add(frame(g7, p7, 7, 300, 7, 6), [](auto& f) { f[16] += 1; });                 // Truncated (+256)
  add(frame(g7, p7, 7, 300, 8, 7), [](auto& f) { f[23] = 17; });                 // NotEsp
  add(frame(g7, p7, 7, 300, 9, 8), [](auto& f) { f[17] -= 1; });                 // BadLength
  add(frame(g7, p7, 7, 300, 10, 9), [](auto& f) {                                 // ShortIcv
    f[16] = 0;
    f[17] = 20 + 8 + 8 + 16;
  });
  add(frame(g7, p7, 7, 300, 11, 10), [](auto& f) { f[49] ^= 1; });               // IvMismatch
  add(frame(g7, p7, 7, 999, 12, 11));                                            // UnknownSpi (key 999 exists nowhere)
  add(frame(0xef0100ff, p7, 7, 300, 13, 12));                                    // WrongGroup: no such channel
  add(frame(g7, 6000, 7, 300, 14, 13));                                          // WrongGroup: channel 7's group, other port
  add(frame(g7, p7, 7, 300, 15, 14, 99));                                        // BadNextHeader
  add(frame(g7, p7, 7, 300, 16, 15, esp::kNextUdp, 17, [](uint8_t* f) {           // BadPad
    f[esp::kCipherOffset + esp::kUdpLen + 17] = 9;
  }));
  add(frame(g7, p7, 7, 300, 17, 16, esp::kNextUdp, 64, [](uint8_t* f) {           // BadInner
    f[esp::kCipherOffset + 5] += 4;
  }));
  add(frame(g7, p7, 7, 300, 18, 0, esp::kNextControl, 8));                       // BadControl
  r.process(in);

  EXPECT_EQ(r.chan(0).packets_ok.get(), 2u);
  EXPECT_EQ(r.chan(1).packets_ok.get(), 1u);
  EXPECT_EQ(r.chan(2).packets_ok.get(), 0u);
  EXPECT_EQ(r.chan(0).key_switches.get(), 1u);
  EXPECT_EQ(r.drops(Drop::Replay), 1u);
  EXPECT_EQ(r.drops(Drop::AuthFail), 2u);
  EXPECT_EQ(r.drops(Drop::WrongGroup), 2u);
  for (Drop d : {Drop::NotIpv4, Drop::BadIpHeader, Drop::Fragment, Drop::Truncated, Drop::NotEsp,
                 Drop::BadLength, Drop::ShortIcv, Drop::IvMismatch, Drop::UnknownSpi,
                 Drop::BadNextHeader, Drop::BadPad, Drop::BadInner, Drop::BadControl})
    EXPECT_EQ(r.drops(d), 1u) << drop_name(d);
  // The unknown SPI reached control once, naming its channel by index.
  ControlEvent ev[8];
  ASSERT_EQ(r.events.drain(ev, 8), 1u);
  EXPECT_EQ(ev[0].type, EventType::UnknownSpi);
  EXPECT_EQ(ev[0].channel, 0u);
  EXPECT_EQ(ev[0].spi, 999u);
}

TEST(SendWorker, GeneratedBurstsOfEveryChannelDecipherAtTheReceiver) {
  Sender tx(-1, 16, {64, 200, 64});
  tx.sh.cfg.count = 100;  // per channel
  Receiver r;
  {
    SendWorker w(tx.sh, 0, 1);
    for (std::size_t ci = 0; ci < kChans.size(); ++ci) {
      bool done = false;
      unsigned bursts = 0;
      while (!done && bursts < 100) {
        w.generate_burst(tx.holder.acquire(), static_cast<uint32_t>(ci), done);
        ++bursts;
      }
      EXPECT_TRUE(done) << ci;
    }
    auto out = drain_port();
    ASSERT_EQ(out.size(), 300u);
    // Each frame goes to its channel's group under its channel's SPI.
    for (rte_mbuf* m : out) {
      esp::Parsed p;
      ASSERT_EQ(esp::parse(rte_pktmbuf_mtod(m, uint8_t*), m->data_len, p), Drop::None);
      EXPECT_NE(r.sh.cfg.groups.find(p.dst_ip), GroupIndex::kNone);
      EXPECT_EQ(p.spi, 300u);
    }
    r.process(out);
  }
  for (std::size_t ci = 0; ci < kChans.size(); ++ci) {
    EXPECT_EQ(tx.stats().chan[ci].packets.get(), 100u);
    EXPECT_EQ(r.chan(ci).packets_ok.get(), 100u) << ci;
    EXPECT_EQ(r.chan(ci).bytes_ok.get(), ci == 1 ? 20000u : 6400u);
    auto& tr = *r.chan(ci).tracker;
    tr.finish(100);
    EXPECT_EQ(tr.received, 100u);
    EXPECT_EQ(tr.lost, 0u);
    EXPECT_EQ(tr.duplicated, 0u);
  }
  EXPECT_EQ(r.drops(Drop::AuthFail), 0u);
}

TEST(SendWorker, IngestPicksTheChannelByGroupAndPortAndKeepsTheDatagram) {
  // The loopback is the ingest port too: frames put on it come back as
  // ingest; all 33 in one burst, before the enciphered ones come back.
  Sender tx(kPort, 40, {64, 64, 64});

  // Plaintext datagrams with the application's own source ports, interleaved
  // over the channels, plus two for no channel and one that is not UDP.
  struct Sent {
    uint32_t group;
    uint16_t sport, dport;
    std::vector<uint8_t> payload;
  };
  std::vector<Sent> sent;
  std::vector<rte_mbuf*> plain;
  auto datagram = [&](uint32_t group, uint16_t sport, uint16_t dport, std::size_t n, uint8_t proto = 17) {
    std::vector<uint8_t> f(esp::kEthLen + 20 + 8 + n);
    f[12] = 0x08;
    uint8_t* ip = f.data() + esp::kEthLen;
    ip[0] = 0x45;
    ip[2] = static_cast<uint8_t>((20 + 8 + n) >> 8);
    ip[3] = static_cast<uint8_t>(20 + 8 + n);
    ip[8] = 9;
    ip[9] = proto;
    for (int k = 0; k < 4; ++k) ip[16 + k] = static_cast<uint8_t>(group >> (24 - 8 * k));
    uint8_t* udp = ip + 20;
    udp[0] = static_cast<uint8_t>(sport >> 8);
    udp[1] = static_cast<uint8_t>(sport);
    udp[2] = static_cast<uint8_t>(dport >> 8);
    udp[3] = static_cast<uint8_t>(dport);
    udp[4] = static_cast<uint8_t>((8 + n) >> 8);
    udp[5] = static_cast<uint8_t>(8 + n);
    std::vector<uint8_t> payload(n);
    for (std::size_t k = 0; k < n; ++k) payload[k] = static_cast<uint8_t>(k * 13 + sport);
    std::memcpy(udp + 8, payload.data(), n);
    plain.push_back(mbuf_of(f));
    return Sent{group, sport, dport, payload};
  };
  for (int i = 0; i < 30; ++i) {
    const Chan& c = kChans[i % 3];
    sent.push_back(datagram(c.group, static_cast<uint16_t>(40000 + i), c.port, 20 + i * 3));
  }
  datagram(0xef0100ff, 1, 5007, 10);            // no channel has this group
  datagram(kChans[0].group, 1, 6000, 10);       // channel 7's group, another port
  datagram(kChans[0].group, 1, 5007, 10, 6);    // not UDP
  ASSERT_EQ(rte_eth_tx_burst(kPort, 0, plain.data(), static_cast<uint16_t>(plain.size())), plain.size());

  Receiver r(Deliver::Port);
  {
    SendWorker w(tx.sh, 0, 1);
    bool done = false;
    EXPECT_EQ(w.ingest_burst(tx.holder.acquire(), done), 33u);
  }
  EXPECT_EQ(tx.stats().ingest_rx.get(), 33u);
  EXPECT_EQ(tx.stats().ingest_no_channel.get(), 2u);
  EXPECT_EQ(tx.stats().ingest_bad.get(), 1u);
  EXPECT_EQ(tx.stats().packets.get(), 30u);
  for (std::size_t ci = 0; ci < kChans.size(); ++ci) EXPECT_EQ(tx.stats().chan[ci].packets.get(), 10u);

  // Deciphered and re-emitted as plaintext (--deliver port:N, here the loopback).
  r.process(drain_port());
  auto back = drain_port();
  ASSERT_EQ(back.size(), 30u);
  // Per channel the order is kept; match each frame to the datagram sent.
  std::vector<std::size_t> next_of(kChans.size(), 0);
  for (rte_mbuf* m : back) {
    const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
    esp::Datagram d{};
    ASSERT_TRUE(esp::parse_datagram(f, m->data_len, d));
    const uint32_t ci = r.sh.cfg.groups.find(d.dst_ip);
    ASSERT_NE(ci, GroupIndex::kNone);
    std::size_t& k = next_of[ci];
    while (k < sent.size() && sent[k].group != d.dst_ip) ++k;
    ASSERT_LT(k, sent.size());
    const Sent& s = sent[k++];
    const uint8_t* udp = f + d.udp_offset;
    EXPECT_EQ(uint16_t(udp[0] << 8 | udp[1]), s.sport);
    EXPECT_EQ(uint16_t(udp[2] << 8 | udp[3]), s.dport);
    ASSERT_EQ(d.udp_len, 8 + s.payload.size());
    EXPECT_EQ(std::memcmp(udp + 8, s.payload.data(), s.payload.size()), 0);
    EXPECT_EQ(f[esp::kEthLen + 9], 17);  // the plaintext IPv4 header says UDP again
    rte_pktmbuf_free(m);
  }
}

namespace {
// The frame with an 802.1Q (or, tpid 0x88a8, 802.1ad) tag after the MACs.
std::vector<uint8_t> tagged(std::vector<uint8_t> f, uint16_t tci, uint16_t tpid = 0x8100) {
  const uint8_t tag[4] = {static_cast<uint8_t>(tpid >> 8), static_cast<uint8_t>(tpid),
                          static_cast<uint8_t>(tci >> 8), static_cast<uint8_t>(tci)};
  f.insert(f.begin() + 12, tag, tag + 4);
  return f;
}
}  // namespace

TEST(RecvWorker, VlanPortTakesItsTaggedFramesOnly) {
  Receiver r;
  r.sh.cfg.vlan.on = true;
  r.sh.cfg.vlan.id = 301;
  const uint32_t g7 = kChans[0].group;
  const uint16_t p7 = kChans[0].port;
  std::vector<rte_mbuf*> in;
  in.push_back(mbuf_of(tagged(frame(g7, p7, 7, 300, 1, 0), 301)));
  in.push_back(mbuf_of(tagged(frame(g7, p7, 7, 300, 2, 1), 5 << 13 | 301)));  // a priority: still 301
  in.push_back(mbuf_of(tagged(frame(g7, p7, 7, 300, 3, 2), 302)));            // another VLAN
  in.push_back(mbuf_of(frame(g7, p7, 7, 300, 4, 3)));                          // untagged
  in.push_back(mbuf_of(tagged(tagged(frame(g7, p7, 7, 300, 5, 4), 301), 301, 0x88a8)));  // QinQ
  // As a NIC with VLAN strip hands them over: the tag in the mbuf, not the frame.
  rte_mbuf* hw = mbuf_of(frame(g7, p7, 7, 300, 6, 5));
  hw->ol_flags |= RTE_MBUF_F_RX_VLAN | RTE_MBUF_F_RX_VLAN_STRIPPED;
  hw->vlan_tci = 301;
  in.push_back(hw);
  rte_mbuf* hw_other = mbuf_of(frame(g7, p7, 7, 300, 7, 6));
  hw_other->ol_flags |= RTE_MBUF_F_RX_VLAN | RTE_MBUF_F_RX_VLAN_STRIPPED;
  hw_other->vlan_tci = 7;
  in.push_back(hw_other);
  r.process(in);
  EXPECT_EQ(r.chan(0).packets_ok.get(), 3u);
  EXPECT_EQ(r.drops(Drop::WrongVlan), 4u);
  EXPECT_EQ(r.drops(Drop::NotIpv4), 0u);
  EXPECT_EQ(r.drops(Drop::AuthFail), 0u);
}

TEST(RecvWorker, UntaggedPortTakesPriorityTagsAndCountsOtherVlans) {
  Receiver r;
  const uint32_t g7 = kChans[0].group;
  const uint16_t p7 = kChans[0].port;
  std::vector<rte_mbuf*> in;
  in.push_back(mbuf_of(frame(g7, p7, 7, 300, 1, 0)));
  in.push_back(mbuf_of(tagged(frame(g7, p7, 7, 300, 2, 1), 4 << 13)));  // VID 0: priority only
  in.push_back(mbuf_of(tagged(frame(g7, p7, 7, 300, 3, 2), 301)));
  std::vector<uint8_t> runt(16, 0);  // tagged, but nothing after the tag
  runt[12] = 0x81;
  in.push_back(mbuf_of(runt));
  r.process(in);
  EXPECT_EQ(r.chan(0).packets_ok.get(), 2u);
  EXPECT_EQ(r.drops(Drop::WrongVlan), 1u);
  EXPECT_EQ(r.drops(Drop::NotIpv4), 1u);
}

TEST(SendWorker, VlanTagsEveryFrameAndTheVlanReceiverDeciphersThem) {
  Sender tx(-1, 16, {64, 64, 64});
  tx.sh.cfg.count = 40;
  tx.sh.cfg.vlan.on = true;
  tx.sh.cfg.vlan.id = 301;
  tx.sh.cfg.vlan.pcp = 5;
  Receiver r;
  r.sh.cfg.vlan = tx.sh.cfg.vlan;
  {
    SendWorker w(tx.sh, 0, 1);
    bool done = false;
    for (unsigned b = 0; b < 10 && !done; ++b) w.generate_burst(tx.holder.acquire(), 0, done);
    EXPECT_TRUE(done);
  }
  auto out = drain_port();
  ASSERT_EQ(out.size(), 40u);
  for (rte_mbuf* m : out) {
    const uint8_t* f = rte_pktmbuf_mtod(m, const uint8_t*);
    ASSERT_EQ(f[12] << 8 | f[13], 0x8100);
    EXPECT_EQ(f[14] << 8 | f[15], 5 << 13 | 301);
    EXPECT_EQ(f[16] << 8 | f[17], 0x0800);
  }
  r.process(out);
  EXPECT_EQ(r.chan(0).packets_ok.get(), 40u);
  EXPECT_EQ(r.drops(Drop::WrongVlan), 0u);
  // Wire bytes count the tag: 40 frames of frame_len(64) + 4.
  EXPECT_EQ(tx.stats().wire_bytes.get(), 40u * (esp::frame_len(64) + 4));
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const std::string prefix = "kc_ut_" + std::to_string(getpid());
  std::vector<std::string> args = {"test_workers", "--no-huge", "-m", "256", "--no-pci",
                                   "--file-prefix", prefix, "--vdev", "net_ring0",
                                   "--log-level", "lib.eal:warning", "-l", "0"};
  std::vector<char*> av;
  for (auto& a : args) av.push_back(a.data());
  if (rte_eal_init(static_cast<int>(av.size()), av.data()) < 0) {
    std::fprintf(stderr, "EAL init failed (needs a writable /var/run/dpdk)\n");
    return 1;
  }
  g_pool = make_pool("ut_pool", 4096);
  port_start(PortSetup{kPort, 1, 1, 1024, 1024, g_pool, {}});
  const int rc = RUN_ALL_TESTS();
  port_stop(kPort);
  rte_eal_cleanup();
  return rc;
}
