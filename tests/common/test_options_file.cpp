// Config files: what a line may hold, and that every refusal names FILE:LINE.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/options_file.hpp"

namespace po = boost::program_options;
using keycast::store_options_file;

namespace {

struct OptionsFile : ::testing::Test {
  std::string path = "/tmp/kc_options_file_" + std::to_string(getpid()) + ".conf";
  po::options_description desc;
  int port = 0;
  bool verbose = false;
  std::vector<std::string> channels;
  OptionsFile() {
    desc.add_options()("port", po::value(&port)->default_value(7))("verbose", po::bool_switch(&verbose))(
        "channel", po::value(&channels)->composing())("config", po::value<std::string>());
  }
  ~OptionsFile() override { unlink(path.c_str()); }
  void write(const std::string& text) { std::ofstream(path) << text; }
  // The error text, or "" when the file was accepted.
  std::string load(const std::vector<std::string>& cmdline = {}) {
    po::variables_map vm;
    std::vector<const char*> argv{"prog"};
    for (auto& a : cmdline) argv.push_back(a.c_str());
    try {
      po::store(po::parse_command_line(static_cast<int>(argv.size()), argv.data(), desc), vm);
      store_options_file(path, desc, vm);
      po::notify(vm);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }
};

TEST_F(OptionsFile, ReadsValuesSwitchesRepeatsAndComments) {
  write("# a comment\n\n  port = 9  \nverbose = yes\nchannel = 1=239.1.1.1:5000\nchannel=2=239.1.1.2:5000\n");
  ASSERT_EQ(load(), "");
  EXPECT_EQ(port, 9);
  EXPECT_TRUE(verbose);
  EXPECT_EQ(channels, (std::vector<std::string>{"1=239.1.1.1:5000", "2=239.1.1.2:5000"}));
}

TEST_F(OptionsFile, CommandLineWins) {
  write("port = 9\nverbose = false\n");
  ASSERT_EQ(load({"--port", "11"}), "");
  EXPECT_EQ(port, 11);
  EXPECT_FALSE(verbose);
}

TEST_F(OptionsFile, EveryRefusalNamesTheLine) {
  const std::string p = path + ":";
  write("port = 9\nbogus = 1\n");
  EXPECT_EQ(load(), p + "2: unknown option 'bogus'");
  write("\n\nport 9\n");
  EXPECT_EQ(load(), p + "3: expected 'name = value', got 'port 9'");
  write("port = nine\n");
  EXPECT_NE(load().find(p + "1: "), std::string::npos);
  write("port = 1\n# again\nport = 2\n");
  EXPECT_EQ(load(), p + "3: port given twice (first on line 1)");
  write("verbose = maybe\n");
  EXPECT_EQ(load(), p + "1: verbose: expected true or false, got 'maybe'");
  write("config = /etc/other.conf\n");
  EXPECT_EQ(load(), p + "1: unknown option 'config'");
}

TEST_F(OptionsFile, MissingFileIsNamed) {
  EXPECT_EQ(load(), "--config " + path + ": cannot open");
}

}  // namespace
