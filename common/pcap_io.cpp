#include "common/pcap_io.hpp"

#include <pcap/pcap.h>

#include <memory>
#include <stdexcept>

namespace keycast {

std::vector<Frame> pcap_read(const std::string& path) {
  char err[PCAP_ERRBUF_SIZE];
  std::unique_ptr<pcap_t, void (*)(pcap_t*)> p(pcap_open_offline(path.c_str(), err), pcap_close);
  if (!p) throw std::runtime_error(path + ": " + err);
  if (pcap_datalink(p.get()) != DLT_EN10MB) throw std::runtime_error(path + ": not Ethernet");
  std::vector<Frame> out;
  pcap_pkthdr* h;
  const u_char* data;
  int rc;
  while ((rc = pcap_next_ex(p.get(), &h, &data)) == 1) out.emplace_back(data, data + h->caplen);
  if (rc == PCAP_ERROR) throw std::runtime_error(path + ": " + pcap_geterr(p.get()));
  return out;
}

void pcap_write(const std::string& path, const std::vector<Frame>& frames) {
  std::unique_ptr<pcap_t, void (*)(pcap_t*)> p(pcap_open_dead(DLT_EN10MB, 65535), pcap_close);
  pcap_dumper_t* d = pcap_dump_open(p.get(), path.c_str());
  if (!d) throw std::runtime_error(path + ": " + pcap_geterr(p.get()));
  pcap_pkthdr h{};
  for (const auto& f : frames) {
    h.caplen = h.len = static_cast<bpf_u_int32>(f.size());
    pcap_dump(reinterpret_cast<u_char*>(d), &h, f.data());
  }
  pcap_dump_close(d);
}

}  // namespace keycast
