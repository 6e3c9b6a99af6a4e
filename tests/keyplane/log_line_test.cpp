// keyd's log lines in both formats.
#include <gtest/gtest.h>

#include "keyplane/json.hpp"
#include "keyplane/log_line.hpp"

using namespace keycast::kp;

TEST(LogLine, TextKeepsTheOldFormWithMillisecondsAndNamesOnlyNonInfoLevels) {
  const int64_t t = 1764770400123;  // 2025-12-03T14:00:00.123Z
  EXPECT_EQ(log_line(LogFormat::Text, LogLevel::Info, "master", "listening", t),
            "2025-12-03T14:00:00.123Z keyd[master] listening");
  EXPECT_EQ(log_line(LogFormat::Text, LogLevel::Warning, "slave", "subscribe failed", t),
            "2025-12-03T14:00:00.123Z keyd[slave] warning: subscribe failed");
}

TEST(LogLine, JsonIsOneObjectWithEscapedMessage) {
  const std::string l = log_line(LogFormat::Json, LogLevel::Error, "master", "a \"quoted\"\nline \xff", 5);
  EXPECT_EQ(l.find('\n'), std::string::npos) << "one line per record";
  const Json j = Json::parse(l);
  EXPECT_EQ(j.at("ts"), "1970-01-01T00:00:00.005Z");
  EXPECT_EQ(j.at("level"), "error");
  EXPECT_EQ(j.at("role"), "master");
  EXPECT_EQ(j.at("msg"), "a \"quoted\"\nline \xef\xbf\xbd") << "invalid UTF-8 replaced, not thrown";
}

TEST(LogLine, LevelsAndFormatsParse) {
  LogLevel l;
  EXPECT_TRUE(parse_log_level("warn", l));
  EXPECT_EQ(l, LogLevel::Warning);
  EXPECT_TRUE(parse_log_level("debug", l));
  EXPECT_GT(l, LogLevel::Info) << "debug is the least severe";
  EXPECT_FALSE(parse_log_level("chatty", l));
  LogFormat f;
  EXPECT_TRUE(parse_log_format("json", f));
  EXPECT_FALSE(parse_log_format("xml", f));
}
