// keycast-ctl's output: keyd answers in JSON, and ctl shows it as a table
// (for people), pretty JSON (for jq and scripts) or CSV (for spreadsheets).
// Pure functions of the JSON, so every command renders the same way and the
// renderings are tested without a server.
//
// An array of objects is one row per object, its columns the union of the
// objects' fields in first-seen order; a single object is FIELD/VALUE rows,
// nested objects flattened as a.b. Arrays of scalars are joined with ','.
// Nested records (arrays of objects) are left out of tables and CSV: each
// has a command of its own (the keys of `channels` are `sas`).
#pragma once
#include <string>

#include "keyplane/json.hpp"
#include "keyplane/text_format.hpp"

namespace keycast::kp {

std::string render(const Json& j, TextFormat f);

// One row per key of every channel in a `channels` reply (optionally one
// channel's): channel, spi, spi_hex, role, remaining_s, lifetime_s, and,
// where the server books usage (the master), bytes, packets, holders.
Json sas_rows(const Json& channels, uint32_t only_channel = 0);

}  // namespace keycast::kp
