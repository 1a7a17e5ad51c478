// What the app tests share: their scratch folder, running a command as a user
// would (stdout and stderr together), and reading a file back.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace quanta::testing {

inline std::string Tmp() {
  const char* d = std::getenv("TEST_TMPDIR");
  return d ? d : "/tmp";
}

inline std::string Read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs a command; returns its exit code and (stdout + stderr) in *output.
inline int RunCommand(const std::string& command, std::string* output) {
  std::string log = Tmp() + "/run.log";
  int status = std::system((command + " > " + log + " 2>&1").c_str());
  *output = Read(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace quanta::testing
