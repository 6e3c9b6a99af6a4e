#include "dataplane/stats.hpp"

#include "dataplane/app.hpp"

#include <rte_telemetry.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace keycast::dp {

namespace {

void put_value(std::ostringstream& o, const Figure& f);

// The members of one object, in order, with "a.b" names grouped under "a"
// (at the place of the group's first member); sep goes between members.
void put_members(std::ostringstream& o, const Figures& figs, const char* sep) {
  std::vector<std::string> done_groups;
  bool first = true;
  for (std::size_t k = 0; k < figs.size(); ++k) {
    const auto& f = figs[k];
    auto dot = f.name.find('.');
    if (dot == std::string::npos) {
      o << (first ? "" : sep) << '"' << f.name << "\": ";
      put_value(o, f);
      first = false;
      continue;
    }
    std::string group = f.name.substr(0, dot);
    bool seen = false;
    for (auto& g : done_groups) seen |= g == group;
    if (seen) continue;
    done_groups.push_back(group);
    o << (first ? "" : sep) << '"' << group << "\": {";
    first = false;
    bool ifirst = true;
    for (std::size_t j = k; j < figs.size(); ++j) {
      const auto& g = figs[j];
      if (g.name.compare(0, dot + 1, group + ".") != 0) continue;
      o << (ifirst ? "" : ", ") << "\"" << g.name.substr(dot + 1) << "\": ";
      put_value(o, g);
      ifirst = false;
    }
    o << "}";
  }
}

void put_object(std::ostringstream& o, const Figures& figs) {
  o << '{';
  put_members(o, figs, ", ");
  o << '}';
}

void put_value(std::ostringstream& o, const Figure& f) {
  switch (f.kind) {
    case Figure::Records:
      o << '[';
      for (std::size_t k = 0; k < f.records.size(); ++k) {
        o << (k ? ",\n    " : "\n    ");
        put_object(o, f.records[k]);
      }
      o << (f.records.empty() ? "]" : "\n  ]");
      break;
    case Figure::Int: o << f.i; break;
    case Figure::Real: {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.6f", f.d);
      o << buf;
      break;
    }
    case Figure::List:
      o << '[';
      for (std::size_t k = 0; k < f.list.size(); ++k) o << (k ? ", " : "") << f.list[k];
      o << ']';
      break;
  }
}

std::mutex& tel_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, std::function<Figures(const std::string&)>>& tel_commands() {
  static std::map<std::string, std::function<Figures(const std::string&)>> m;
  return m;
}

void tel_dict(struct rte_tel_data* d, Figures& figs);

int tel_cb(const char* cmd, const char* param, struct rte_tel_data* d) {
  Figures figs;
  {
    // Held while the figures are gathered, so telemetry_detach() waits for a
    // running callback. Control path only, never the fast path.
    std::lock_guard<std::mutex> lock(tel_mutex());
    auto it = tel_commands().find(cmd);
    if (it == tel_commands().end() || !it->second) return -1;
    figs = it->second(param ? param : "");
  }
  if (figs.empty()) return -1;
  tel_dict(d, figs);
  return 0;
}

void tel_dict(struct rte_tel_data* d, Figures& figs) {
  rte_tel_data_start_dict(d);
  for (auto& f : figs) {
    // Telemetry names allow letters, digits, '_' and '/': "drops.x" -> "drops_x".
    for (char& c : f.name)
      if (c == '.') c = '_';
    switch (f.kind) {
      case Figure::Int: rte_tel_data_add_dict_u64(d, f.name.c_str(), f.i); break;
      case Figure::Real:
        // Telemetry dicts carry integers and strings; reals as strings.
        rte_tel_data_add_dict_string(d, f.name.c_str(), std::to_string(f.d).c_str());
        break;
      case Figure::List: {
        rte_tel_data* arr = rte_tel_data_alloc();
        if (!arr) break;
        rte_tel_data_start_array(arr, RTE_TEL_U64_VAL);
        for (uint64_t v : f.list) rte_tel_data_add_array_u64(arr, v);
        rte_tel_data_add_dict_container(d, f.name.c_str(), arr, 0);
        break;
      }
      case Figure::Records:
        // Too deep for one telemetry answer: each record has a command of its own.
        rte_tel_data_add_dict_u64(d, (f.name + "_count").c_str(), f.records.size());
        break;
    }
  }
}

}  // namespace

std::string figures_json(const Figures& figs) {
  std::ostringstream o;
  o << "{\n  ";
  put_members(o, figs, ",\n  ");
  o << "\n}\n";
  return o.str();
}

void write_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) throw std::runtime_error("cannot write " + tmp);
    f << text;
    if (!f.flush()) throw std::runtime_error("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("cannot rename " + tmp + " to " + path);
}

void telemetry_register(const char* cmd, std::function<Figures()> fn, const char* help) {
  telemetry_register_param(cmd, [fn = std::move(fn)](const std::string&) { return fn(); }, help);
}

void telemetry_register_param(const char* cmd, std::function<Figures(const std::string&)> fn,
                              const char* help) {
  {
    std::lock_guard<std::mutex> lock(tel_mutex());
    tel_commands()[cmd] = std::move(fn);
  }
  rte_telemetry_register_cmd(cmd, tel_cb, help);
}

const Figure* find_figure(const Figures& f, const std::string& name) {
  for (auto& x : f)
    if (x.name == name) return &x;
  return nullptr;
}

uint64_t figure_int(const Figures& f, const std::string& name) {
  const Figure* x = find_figure(f, name);
  if (!x || x->kind != Figure::Int) throw std::logic_error("no integer figure " + name);
  return x->i;
}

void telemetry_detach(const char* cmd) {
  std::lock_guard<std::mutex> lock(tel_mutex());
  tel_commands()[cmd] = nullptr;
}

void add_port_figures(Figures& f, const PortCounters& c) {
  f.push_back(Figure::integer("port.rx_missed", c.rx_missed));
  f.push_back(Figure::integer("port.rx_nombuf", c.rx_nombuf));
  f.push_back(Figure::integer("port.rx_errors", c.rx_errors));
  f.push_back(Figure::integer("port.tx_errors", c.tx_errors));
}

std::string human_rate(double v) {
  char buf[32];
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

}  // namespace keycast::dp
