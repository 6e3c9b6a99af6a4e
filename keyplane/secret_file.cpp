#include "keyplane/secret_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace keycast::kp {

void create_secret_file(const std::string& path, const std::string& content, const std::string& opt) {
  // O_EXCL: the check for an existing file and the creation are one step, so
  // nothing can slip a file (or a symlink) in between.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    if (errno == EEXIST)
      throw std::runtime_error(opt + " " + path +
                               ": exists; refusing to overwrite it (every key wrapped under the old "
                               "master key would become unreadable). Remove it first if that is meant");
    throw std::runtime_error(opt + " " + path + ": " + std::strerror(errno));
  }
  // The umask can only take bits away from 0600; fchmod makes it exactly 0600.
  bool ok = ::fchmod(fd, 0600) == 0;
  for (std::size_t done = 0; ok && done < content.size();) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) {
    ::unlink(path.c_str());  // a half-written key is worse than none
    throw std::runtime_error(opt + " " + path + ": " + std::strerror(err));
  }
}

void check_secret_file_mode(const std::string& path, const std::string& opt) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error(opt + " " + path + ": " + std::strerror(errno));
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw std::runtime_error(opt + " " + path + ": mode " + mode +
                             " lets group or others read the master key; chmod 600 it (or start "
                             "with --allow-insecure-key-file)");
  }
}

}  // namespace keycast::kp
