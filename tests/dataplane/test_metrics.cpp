// --metrics for keycast-send/-recv without DPDK: the Prometheus text made
// from figures (families whole, HELP and TYPE on each, labels escaped), what
// /healthz says, and the non-blocking HTTP responder over loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "dataplane/app.hpp"
#include "dataplane/metrics_http.hpp"
#include "dataplane/metrics_render.hpp"

using namespace keycast::dp;

namespace {

Figures channel(uint64_t id, uint64_t packets, uint64_t spi) {
  return {Figure::integer("channel", id), Figure::integer("packets_sent", packets),
          Figure::integer("bytes_sent", packets * 100), Figure::integer("key_switches", 2),
          Figure::ints("spi_list", {256, 257, 258}), Figure::integer("spi_current", spi)};
}

// Families in order of appearance; fails the test on a family split in two,
// a sample before its TYPE, or HELP/TYPE missing.
std::map<std::string, std::vector<std::string>> families(const std::string& text) {
  std::map<std::string, std::vector<std::string>> fams;
  std::set<std::string> help, closed;
  std::string current;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    if (l.rfind("# HELP ", 0) == 0) {
      const std::string n = l.substr(7, l.find(' ', 7) - 7);
      EXPECT_TRUE(help.insert(n).second) << "HELP twice: " << n;
      if (!current.empty()) closed.insert(current);
      current = n;
    } else if (l.rfind("# TYPE ", 0) == 0) {
      const std::string n = l.substr(7, l.find(' ', 7) - 7);
      EXPECT_EQ(n, current) << "TYPE without its HELP: " << l;
      fams[n];
    } else {
      const std::string n = l.substr(0, l.find_first_of("{ "));
      EXPECT_EQ(n, current) << "sample outside its family: " << l;
      EXPECT_FALSE(closed.count(n)) << "family split: " << l;
      fams[n].push_back(l);
    }
  }
  return fams;
}

}  // namespace

TEST(MetricsRender, SenderFamilies) {
  Figures totals = {Figure::integer("packets_sent", 1000), Figure::integer("bytes_sent", 100000),
                    Figure::integer("wire_bytes", 150000), Figure::real("duration_s", 2.5),
                    Figure::integer("notices_sent", 4), Figure::integer("tx_dropped", 7),
                    Figure::integer("alloc_fail", 0), Figure::integer("ingest_rx", 0),
                    Figure::integer("ingest_bad", 0), Figure::integer("ingest_no_channel", 0),
                    Figure::integer("channels_configured", 2), Figure::integer("workers", 1)};
  std::vector<Figures> chans = {channel(1, 600, 258), channel(7, 400, 0)};
  NicSnapshot nic;
  nic.port = 0;
  nic.link_up = true;
  nic.opackets = 1000;
  nic.imissed = 3;
  nic.xstats = {{"tx_good_packets", 1000}, {"odd\"name\\", 1}};
  const std::string t = render_metrics(MetricsRole::Send, totals, chans, {nic}, "1.2.3");
  auto f = families(t);
  EXPECT_EQ(f["keycast_build_info"], std::vector<std::string>{"keycast_build_info{version=\"1.2.3\",role=\"send\"} 1"});
  EXPECT_EQ(f["keycast_send_packets_total"], std::vector<std::string>{"keycast_send_packets_total 1000"});
  EXPECT_EQ(f["keycast_send_wire_bytes_total"], std::vector<std::string>{"keycast_send_wire_bytes_total 150000"});
  EXPECT_EQ(f["keycast_send_drops_total"],
            (std::vector<std::string>{"keycast_send_drops_total{reason=\"tx_dropped\"} 7",
                                      "keycast_send_drops_total{reason=\"alloc_fail\"} 0",
                                      "keycast_send_drops_total{reason=\"ingest_bad\"} 0",
                                      "keycast_send_drops_total{reason=\"ingest_no_channel\"} 0"}));
  EXPECT_EQ(f["keycast_send_channel_packets_total"],
            (std::vector<std::string>{"keycast_send_channel_packets_total{channel=\"1\"} 600",
                                      "keycast_send_channel_packets_total{channel=\"7\"} 400"}));
  EXPECT_EQ(f["keycast_send_current_spi"],
            (std::vector<std::string>{"keycast_send_current_spi{channel=\"1\"} 258",
                                      "keycast_send_current_spi{channel=\"7\"} 0"}));
  EXPECT_EQ(f["keycast_send_key_switches_total"].size(), 2u);
  EXPECT_EQ(f["keycast_nic_rx_missed_total"], std::vector<std::string>{"keycast_nic_rx_missed_total{port=\"0\"} 3"});
  EXPECT_EQ(f["keycast_nic_link_up"], std::vector<std::string>{"keycast_nic_link_up{port=\"0\"} 1"});
  EXPECT_EQ(f["keycast_nic_xstat"],
            (std::vector<std::string>{"keycast_nic_xstat{port=\"0\",name=\"tx_good_packets\"} 1000",
                                      "keycast_nic_xstat{port=\"0\",name=\"odd\\\"name\\\\\"} 1"}));
  // Not exported: lists, reals of the final report, receiver families.
  EXPECT_EQ(t.find("spi_list"), std::string::npos);
  EXPECT_EQ(t.find("duration"), std::string::npos);
  EXPECT_EQ(t.find("keycast_recv_"), std::string::npos);
  EXPECT_NE(t.find("# TYPE keycast_nic_xstat untyped\n"), std::string::npos);
  EXPECT_NE(t.find("# TYPE keycast_send_packets_total counter\n"), std::string::npos);
}

TEST(MetricsRender, ReceiverDropsByReasonAndAbsentFigures) {
  Figures totals = {Figure::integer("packets_ok", 90), Figure::integer("bytes_ok", 9000),
                    Figure::integer("rx_packets", 100), Figure::integer("notices", 1),
                    Figure::integer("auth_fail", 3), Figure::integer("unknown_spi", 5),
                    Figure::integer("drops.unknown_spi", 5), Figure::integer("drops.auth_fail", 3),
                    Figure::integer("drops.not_ipv4", 2)};
  Figures c = {Figure::integer("channel", 3), Figure::integer("packets_ok", 90), Figure::integer("bytes_ok", 9000),
               Figure::integer("key_switches", 1), Figure::integer("spis_seen", 2), Figure::integer("lost", 0),
               Figure::integer("corrupted", 0), Figure::integer("spi_current", 300)};
  const std::string t = render_metrics(MetricsRole::Recv, totals, {c}, {}, "1.2.3");
  auto f = families(t);
  EXPECT_EQ(f["keycast_build_info"], std::vector<std::string>{"keycast_build_info{version=\"1.2.3\",role=\"recv\"} 1"});
  EXPECT_EQ(f["keycast_recv_drops_total"],
            (std::vector<std::string>{"keycast_recv_drops_total{reason=\"unknown_spi\"} 5",
                                      "keycast_recv_drops_total{reason=\"auth_fail\"} 3",
                                      "keycast_recv_drops_total{reason=\"not_ipv4\"} 2"}));
  EXPECT_EQ(f["keycast_recv_current_spi"], std::vector<std::string>{"keycast_recv_current_spi{channel=\"3\"} 300"});
  EXPECT_EQ(f["keycast_recv_channel_packets_total"],
            std::vector<std::string>{"keycast_recv_channel_packets_total{channel=\"3\"} 90"});
  // Loss is known only at the end: never exported live as a zero.
  EXPECT_EQ(t.find("lost"), std::string::npos);
  // IGMP off: no IGMP families at all; no port: NIC families without samples.
  EXPECT_EQ(t.find("igmp"), std::string::npos);
  EXPECT_TRUE(f.count("keycast_nic_rx_missed_total"));
  EXPECT_TRUE(f["keycast_nic_rx_missed_total"].empty());
}

// With --kms, each channel's key requests: sent, answered with keys, late switches, refusal, and
// the error answers by error; without --kms none of these families is there.
TEST(MetricsRender, ReceiverKeyServerFamiliesByChannelAndError) {
  Figures totals = {Figure::integer("packets_ok", 0)};
  Figures c1 = {Figure::integer("channel", 1), Figure::integer("packets_ok", 5), Figure::integer("kms_requests", 12),
                Figure::integer("kms_ok", 9), Figure::integer("refused", 0), Figure::integer("keys_late", 1),
                Figure::integer("kms_errors.no_next_key", 2), Figure::integer("kms_errors.timeout", 1)};
  Figures c9 = {Figure::integer("channel", 9), Figure::integer("packets_ok", 0), Figure::integer("kms_requests", 1),
                Figure::integer("kms_ok", 0), Figure::integer("refused", 1), Figure::integer("keys_late", 0),
                Figure::integer("kms_errors.channel_denied", 1)};
  auto f = families(render_metrics(MetricsRole::Recv, totals, {c1, c9}, {}, "1"));
  EXPECT_EQ(f["keycast_recv_kms_requests_total"],
            (std::vector<std::string>{"keycast_recv_kms_requests_total{channel=\"1\"} 12",
                                      "keycast_recv_kms_requests_total{channel=\"9\"} 1"}));
  EXPECT_EQ(f["keycast_recv_kms_ok_total"], (std::vector<std::string>{"keycast_recv_kms_ok_total{channel=\"1\"} 9",
                                                                     "keycast_recv_kms_ok_total{channel=\"9\"} 0"}));
  EXPECT_EQ(f["keycast_recv_keys_late_total"],
            (std::vector<std::string>{"keycast_recv_keys_late_total{channel=\"1\"} 1",
                                      "keycast_recv_keys_late_total{channel=\"9\"} 0"}));
  EXPECT_EQ(f["keycast_recv_channel_refused"], (std::vector<std::string>{"keycast_recv_channel_refused{channel=\"1\"} 0",
                                                                        "keycast_recv_channel_refused{channel=\"9\"} 1"}));
  EXPECT_EQ(f["keycast_recv_kms_errors_total"],
            (std::vector<std::string>{"keycast_recv_kms_errors_total{channel=\"1\",error=\"no_next_key\"} 2",
                                      "keycast_recv_kms_errors_total{channel=\"1\",error=\"timeout\"} 1",
                                      "keycast_recv_kms_errors_total{channel=\"9\",error=\"channel_denied\"} 1"}));

  // A key file, no key server: no key-server family, not even empty.
  Figures c = {Figure::integer("channel", 1), Figure::integer("packets_ok", 5)};
  const std::string t = render_metrics(MetricsRole::Recv, totals, {c}, {}, "1");
  EXPECT_EQ(t.find("kms"), std::string::npos);
  EXPECT_EQ(t.find("keys_late"), std::string::npos);
  EXPECT_EQ(t.find("refused"), std::string::npos);
}

TEST(MetricsRender, HealthReasons) {
  EXPECT_EQ(unhealthy_reason({}), "");
  HealthInput h;
  h.ports_down = {1};
  h.channels_without_key = {4};
  EXPECT_EQ(unhealthy_reason(h), "port 1: link down; no key for channel 4");
  h = {};
  h.worker_failed = true;
  for (uint32_t i = 1; i <= 10; ++i) h.channels_without_key.push_back(i);
  EXPECT_EQ(unhealthy_reason(h), "a worker failed; no key for channels 1, 2, 3, 4, 5, 6, 7, 8 and 2 more");
}

namespace {

// Sends `req` in pieces (the responder must wait for the whole request),
// polling the server between them, and returns the whole response.
std::string exchange(MetricsHttp& srv, uint16_t port, const std::vector<std::string>& pieces, int* calls) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  auto metrics = [&] {
    ++*calls;
    return std::string("keycast_x 1\n");
  };
  auto health = [] { return std::string("port 0: link down"); };
  for (const std::string& p : pieces) {
    srv.poll(metrics, health);
    EXPECT_EQ(send(fd, p.data(), p.size(), 0), ssize_t(p.size()));
    srv.poll(metrics, health);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  timeval tv{0, 10000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string resp;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (char buf[512]; std::chrono::steady_clock::now() < end;) {
    srv.poll(metrics, health);
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n == 0) break;
    if (n > 0) resp.append(buf, std::size_t(n));
  }
  close(fd);
  return resp;
}

}  // namespace

TEST(MetricsHttp, AnswersMetricsHealthAndRefusesOtherMethods) {
  MetricsHttp srv(parse_metrics_address("127.0.0.1:0"));
  const std::string addr = srv.address();
  ASSERT_EQ(addr.rfind("127.0.0.1:", 0), 0u) << addr;
  const uint16_t port = static_cast<uint16_t>(std::stoul(addr.substr(10)));
  ASSERT_NE(port, 0);
  int calls = 0;
  // Nothing pending: poll returns at once and renders nothing.
  srv.poll([&] { return ++calls, std::string(); }, [] { return std::string(); });
  EXPECT_EQ(calls, 0);

  std::string r = exchange(srv, port, {"GET /metrics HTTP/1.1\r\nHo", "st: x\r\nAccept: */*\r\n", "\r\n"}, &calls);
  EXPECT_EQ(r.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4\r\n"), std::string::npos) << r;
  EXPECT_NE(r.find("Content-Length: 12\r\n"), std::string::npos) << r;
  EXPECT_EQ(r.substr(r.find("\r\n\r\n") + 4), "keycast_x 1\n");
  EXPECT_EQ(calls, 1);

  r = exchange(srv, port, {"GET /healthz?verbose HTTP/1.0\r\n\r\n"}, &calls);
  EXPECT_EQ(r.rfind("HTTP/1.0 503 Service Unavailable\r\n", 0), 0u) << r;
  EXPECT_EQ(r.substr(r.find("\r\n\r\n") + 4), "port 0: link down\n");
  EXPECT_EQ(calls, 1);

  r = exchange(srv, port, {"POST /metrics HTTP/1.0\r\n\r\n"}, &calls);
  EXPECT_EQ(r.rfind("HTTP/1.0 405 ", 0), 0u) << r;
  EXPECT_EQ(calls, 1);
}

TEST(MetricsHttp, BadAddressesNameTheOption) {
  for (const char* bad : {"9750", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:http", "no.such.host.invalid:9750"}) {
    try {
      parse_metrics_address(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("--metrics"), std::string::npos) << e.what();
    }
  }
  // A port another socket holds: named too (a start-up failure, not a usage error).
  MetricsHttp first(parse_metrics_address("127.0.0.1:0"));
  const std::string taken = first.address();
  try {
    MetricsHttp second(parse_metrics_address(taken));
    ADD_FAILURE() << taken << " bound twice";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("--metrics " + taken), std::string::npos) << e.what();
  }
}

// The final JSON: "a.b" names become an object "a" at the place of its first
// member, at the top level and inside each record of a list alike.
TEST(FiguresJson, GroupsDottedNamesAtTopAndInRecords) {
  Figures rec = {Figure::integer("channel", 7), Figure::integer("kms_errors.no_next_key", 2),
                 Figure::integer("lost", 0), Figure::integer("kms_errors.timeout", 1)};
  Figures f = {Figure::integer("ok", 5), Figure::integer("drops.replay", 3), Figure::integer("drops.auth_fail", 0),
               Figure::objects("channels", {rec})};
  EXPECT_EQ(figures_json(f),
            "{\n  \"ok\": 5,\n  \"drops\": {\"replay\": 3, \"auth_fail\": 0},\n  \"channels\": [\n"
            "    {\"channel\": 7, \"kms_errors\": {\"no_next_key\": 2, \"timeout\": 1}, \"lost\": 0}\n  ]\n}\n");
}
