// keycast-ctl's renderings and settings, without a server.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "keyplane/ctl_render.hpp"
#include "keyplane/ctl_settings.hpp"
#include "kp_test_util.hpp"

using namespace keycast::kp;
namespace po = boost::program_options;

TEST(Ctl, TableOfRecordsAlignsColumnsUnionsFieldsAndSkipsNestedRecords) {
  Json rows = Json::parse(R"([{"channel":1,"origin":"kms","keys":[{"spi":256}]},
                              {"channel":22,"suite":"aes256gcm","spis":[3,4],"note":null}])");
  EXPECT_EQ(render(rows, TextFormat::Table),
            "CHANNEL  ORIGIN  SUITE      SPIS  NOTE\n"
            "1        kms     -          -     -\n"
            "22       -       aes256gcm  3,4   -\n")
      << "columns in first-seen order, the nested key records left to sas";
  EXPECT_EQ(render(Json::array(), TextFormat::Table), "(none)\n");
}

TEST(Ctl, ObjectIsFieldValueRowsWithNestedObjectsFlattened) {
  Json o = Json::parse(R"({"role":"master","peers":{"client":2,"slave":1},"up":true})");
  EXPECT_EQ(render(o, TextFormat::Table),
            "FIELD         VALUE\nrole          master\npeers.client  2\npeers.slave   1\nup            true\n");
  EXPECT_EQ(render(o, TextFormat::Csv), "field,value\nrole,master\npeers.client,2\npeers.slave,1\nup,true\n");
}

TEST(Ctl, CsvQuotesWhatMustBeQuotedAndJsonIsIndented) {
  Json rows = Json::parse(R"([{"identity":"a,b","n":1},{"identity":"say \"hi\"","n":2}])");
  EXPECT_EQ(render(rows, TextFormat::Csv), "identity,n\n\"a,b\",1\n\"say \"\"hi\"\"\",2\n");
  EXPECT_EQ(render(Json{{"a", 1}}, TextFormat::Json), "{\n  \"a\": 1\n}\n");
  TextFormat f;
  EXPECT_TRUE(parse_text_format("csv", f));
  EXPECT_EQ(f, TextFormat::Csv);
  EXPECT_FALSE(parse_text_format("yaml", f));
}

TEST(Ctl, InvalidUtf8FromACertificateNameIsReplacedNotThrown) {
  Json o = {{"identity", std::string("bad\xff")}};
  EXPECT_NO_THROW(render(o, TextFormat::Json));
  EXPECT_NE(json_dump(o).find("\xef\xbf\xbd"), std::string::npos);
}

TEST(Ctl, SasRowsOneKeyARowWithUsageWhereTheServerHasIt) {
  Json ch = Json::parse(R"([
    {"channel":1,"origin":"kms","suite":"aes128gcm","keys":[
      {"role":"previous","spi":255,"remaining_ms":-500,"lifetime_ms":1000},
      {"role":"current","spi":256,"remaining_ms":1500,"lifetime_ms":2000,"bytes":10,"packets":1,"holders":3}]},
    {"channel":2,"origin":"sender","suite":"aes256gcm","keys":[
      {"role":"current","spi":4096,"remaining_ms":20000,"lifetime_ms":20000}]}])");
  Json rows = sas_rows(ch);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1].at("spi_hex"), "0x00000100");
  EXPECT_DOUBLE_EQ(rows[1].at("remaining_s").get<double>(), 1.5);
  EXPECT_EQ(rows[1].at("holders"), 3);
  EXPECT_FALSE(rows[2].contains("holders")) << "a slave books no usage: the field is absent, not 0";
  Json only2 = sas_rows(ch, 2);
  ASSERT_EQ(only2.size(), 1u);
  EXPECT_EQ(only2[0].at("channel"), 2);
  EXPECT_EQ(only2[0].at("origin"), "sender");
}

namespace {

struct Settings {
  std::string server, cert, output;
  int64_t timeout = 0;
  po::options_description conn;
  po::variables_map vm;
  Settings() : conn("c") {
    conn.add_options()("server", po::value(&server))("tls-cert", po::value(&cert))(
        "timeout-ms", po::value(&timeout)->default_value(5000))("output,o", po::value(&output));
  }
  void parse(std::vector<std::string> args, std::map<std::string, std::string> env, const std::string& config = "") {
    std::vector<const char*> av{"ctl"};
    for (auto& a : args) av.push_back(a.c_str());
    po::store(po::parse_command_line(int(av.size()), av.data(), conn), vm);
    store_ctl_settings(conn, vm, config, [&](const std::string& k) -> std::optional<std::string> {
      auto it = env.find(k);
      return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
    });
    po::notify(vm);
  }
};

}  // namespace

TEST(Ctl, CommandLineBeatsEnvironmentBeatsConfigFile) {
  kptest::TempDir d;
  std::filesystem::create_directories(d / "xdg/keycast");
  std::ofstream(d / "xdg/keycast/ctl.conf") << "server = file:1\ntls-cert = ~/file.crt\ntimeout-ms = 700\n";
  {
    Settings s;
    s.parse({}, {{"XDG_CONFIG_HOME", d / "xdg"}, {"HOME", "/home/op"}});
    EXPECT_EQ(s.server, "file:1");
    EXPECT_EQ(s.cert, "~/file.crt") << "ctl expands ~ once every source is merged";
    EXPECT_EQ(s.timeout, 700);
  }
  {
    Settings s;
    s.parse({}, {{"XDG_CONFIG_HOME", d / "xdg"}, {"KEYCAST_SERVER", "env:2"}, {"KEYCAST_OUTPUT", "json"}});
    EXPECT_EQ(s.server, "env:2");
    EXPECT_EQ(s.output, "json");
    EXPECT_EQ(s.timeout, 700);
  }
  {
    Settings s;
    s.parse({"--server", "cli:3", "-o", "csv"}, {{"XDG_CONFIG_HOME", d / "xdg"}, {"KEYCAST_SERVER", "env:2"}});
    EXPECT_EQ(s.server, "cli:3");
    EXPECT_EQ(s.output, "csv");
  }
  {
    Settings s;  // no file anywhere: defaults only
    s.parse({}, {{"HOME", d / "nohome"}});
    EXPECT_EQ(s.server, "");
    EXPECT_EQ(s.timeout, 5000);
  }
  EXPECT_EQ(expand_home("~/a.crt", [](const std::string&) { return std::optional<std::string>("/h"); }), "/h/a.crt");
  EXPECT_EQ(ctl_env_option("KEYCAST_TLS_CA"), "tls-ca");
  EXPECT_EQ(ctl_env_option("PATH"), "");
}

TEST(Ctl, ExplicitConfigMustExistAndBadLinesNameTheLine) {
  kptest::TempDir d;
  std::ofstream(d / "ctl.conf") << "server = a:1\nfrobnicate = 2\n";
  Settings s;
  try {
    s.parse({}, {}, d / "ctl.conf");
    FAIL() << "an unknown name must be refused";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("ctl.conf:2"), std::string::npos) << e.what();
  }
  Settings s2;
  EXPECT_THROW(s2.parse({}, {}, d / "missing.conf"), std::exception);
  Settings s3;
  try {
    s3.parse({}, {{"KEYCAST_TIMEOUT_MS", "soon"}});
    FAIL() << "a bad value in the environment must be refused";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("environment"), std::string::npos) << e.what();
  }
}
