// Config files for every keycast binary: one option a line, `name = value`,
// with the option's long name as on the command line (no leading --). Blank
// lines and lines starting with # are skipped; a repeatable option may be
// given on several lines. An unknown name, a line without '=', or a value the
// option refuses is an error naming FILE:LINE, so a service that fails to
// start says which line to fix.
#pragma once
#include <boost/program_options.hpp>

#include <string>

namespace keycast {

// Stores the file's options into vm. Options already in vm (from the
// command line, stored first) keep their values: the command line wins.
// Throws std::runtime_error("FILE:LINE: ...") or ("--config FILE: cannot open").
void store_options_file(const std::string& path, const boost::program_options::options_description& desc,
                        boost::program_options::variables_map& vm);

}  // namespace keycast
