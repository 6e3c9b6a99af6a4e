#include "keyplane/ctl_render.hpp"

#include <cstdio>
#include <sstream>

#include "keyplane/escape.hpp"

namespace keycast::kp {

namespace {

bool is_record_list(const Json& v) {
  if (!v.is_array()) return false;
  for (const auto& e : v)
    if (e.is_object()) return true;
  return false;
}

std::string cell(const Json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_array()) {
    std::string o;
    for (const auto& e : v) o += (o.empty() ? "" : ",") + cell(e);
    return o.empty() ? "-" : o;
  }
  return json_dump(v);
}

// FIELD/VALUE pairs of one object, nested objects as a.b; record lists skipped.
void flatten(const Json& o, const std::string& prefix, std::vector<std::pair<std::string, std::string>>& out) {
  for (auto it = o.begin(); it != o.end(); ++it) {
    const std::string k = prefix + it.key();
    if (it->is_object()) flatten(*it, k + ".", out);
    else if (!is_record_list(*it)) out.emplace_back(k, cell(*it));
  }
}

std::vector<std::string> columns(const Json& rows) {
  std::vector<std::string> cols;
  for (const auto& r : rows) {
    if (!r.is_object()) continue;
    for (auto it = r.begin(); it != r.end(); ++it) {
      if (is_record_list(*it) || it->is_object()) continue;
      bool seen = false;
      for (const auto& c : cols) seen = seen || c == it.key();
      if (!seen) cols.push_back(it.key());
    }
  }
  return cols;
}

std::string upper(std::string s) {
  for (char& c : s) c = (c >= 'a' && c <= 'z') ? char(c - 'a' + 'A') : c;
  return s;
}

std::string table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> w(head.size());
  for (std::size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], r[i].size());
  std::ostringstream o;
  auto line = [&](const std::vector<std::string>& r) {
    std::string l;
    for (std::size_t i = 0; i < r.size(); ++i) {
      l += r[i];
      if (i + 1 < r.size()) l += std::string(w[i] - r[i].size() + 2, ' ');
    }
    o << l << "\n";
  };
  line(head);
  for (const auto& r : rows) line(r);
  return o.str();
}

std::string csv_line(const std::vector<std::string>& r) {
  std::string l;
  for (std::size_t i = 0; i < r.size(); ++i) l += (i ? "," : "") + csv_str(r[i]);
  return l + "\n";
}

}  // namespace

std::string render(const Json& j, TextFormat f) {
  if (f == TextFormat::Json) return json_dump(j, 2) + "\n";
  std::vector<std::string> head;
  std::vector<std::vector<std::string>> rows;
  if (j.is_array()) {
    head = columns(j);
    for (const auto& r : j) {
      std::vector<std::string> row;
      for (const auto& c : head) row.push_back(r.is_object() && r.contains(c) ? cell(r[c]) : "-");
      rows.push_back(std::move(row));
    }
    if (f == TextFormat::Table)
      for (auto& h : head) h = upper(h);
  } else if (j.is_object()) {
    std::vector<std::pair<std::string, std::string>> kv;
    flatten(j, "", kv);
    head = f == TextFormat::Table ? std::vector<std::string>{"FIELD", "VALUE"}
                                 : std::vector<std::string>{"field", "value"};
    for (auto& [k, v] : kv) rows.push_back({k, v});
  } else {
    return cell(j) + "\n";
  }
  if (f == TextFormat::Csv) {
    std::string o = csv_line(head);
    for (const auto& r : rows) o += csv_line(r);
    return o;
  }
  if (rows.empty() && j.is_array()) return "(none)\n";
  return table(head, rows);
}

Json sas_rows(const Json& channels, uint32_t only_channel) {
  Json out = Json::array();
  if (!channels.is_array()) return out;
  for (const auto& ch : channels) {
    const uint32_t id = ch.value("channel", 0u);
    if (only_channel && id != only_channel) continue;
    if (!ch.contains("keys")) continue;
    for (const auto& k : ch["keys"]) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "0x%08x", k.value("spi", 0u));
      Json r = {{"channel", id},
                {"spi", k.value("spi", 0u)},
                {"spi_hex", hex},
                {"role", k.value("role", "")},
                {"origin", ch.value("origin", "")},
                {"suite", ch.value("suite", "")},
                {"remaining_s", double(k.value("remaining_ms", int64_t(0))) / 1000.0},
                {"lifetime_s", double(k.value("lifetime_ms", int64_t(0))) / 1000.0}};
      for (const char* f : {"bytes", "packets", "holders"})
        if (k.contains(f)) r[f] = k[f];
      out.push_back(std::move(r));
    }
  }
  return out;
}

}  // namespace keycast::kp
