// Files that hold key material (the master key-wrapping key): created owner-
// only and never over an existing one, and refused when others can read them.
#pragma once
#include <string>

namespace keycast::kp {

// Writes content to a new file at path, mode 0600 whatever the umask,
// flushed to disk. Refuses (std::runtime_error naming opt and path) when the
// path exists: overwriting a master key makes every key wrapped under it
// unreadable.
void create_secret_file(const std::string& path, const std::string& content, const std::string& opt);

// std::runtime_error naming opt when the file's mode gives group or others
// any access (it cannot be kept secret), with the chmod that fixes it.
void check_secret_file_mode(const std::string& path, const std::string& opt);

}  // namespace keycast::kp
