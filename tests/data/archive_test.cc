// MD5, tar, extraction, and the CIFAR-100 download against a local HTTP server
// (python3 -m http.server on 127.0.0.1, started and stopped here).
#include "data/archive.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "data/readers.h"
#include "gtest/gtest.h"
#include "tests/data/test_files.h"

extern char** environ;

namespace quanta::data {
namespace {

using namespace testing;
namespace fs = std::filesystem;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(Archive, Md5MatchesRfc1321) {
  EXPECT_EQ(Md5Hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(Md5Hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(Md5Hex("message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
  EXPECT_EQ(Md5Hex("12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
            "57edf4a22be3c955ac49da2e2107b67a");
}

TEST(Archive, TarParsingAndItsRefusals) {
  std::string tar = Tar({{"d/", "", '5'}, {"d/a.txt", "hello"}, {"./d/b.bin", std::string(700, 'x')}});
  auto entries = ParseTar(tar, "t.tar");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 3u);
  EXPECT_TRUE((*entries)[0].is_dir);
  EXPECT_EQ((*entries)[1].data, "hello");
  EXPECT_EQ((*entries)[2].name, "d/b.bin");
  EXPECT_EQ((*entries)[2].data.size(), 700u);
  EXPECT_EQ(Message(ParseTar(Tar({{"../evil", "x"}}), "t.tar").status()),
            "t.tar: tar entry \"../evil\" escapes the target folder (absolute or uses ..)");
  EXPECT_EQ(Message(ParseTar(Tar({{"/etc/passwd", "x"}}), "t.tar").status()),
            "t.tar: tar entry \"/etc/passwd\" escapes the target folder (absolute or uses ..)");
  EXPECT_EQ(Message(ParseTar(Tar({{"link", "", '2'}}), "t.tar").status()),
            "t.tar: tar entry \"link\" has unsupported type '2' (links and devices are refused)");
  std::string bad_sum = tar;
  bad_sum[10] ^= 1;
  EXPECT_EQ(Message(ParseTar(bad_sum, "t.tar").status()), "t.tar: tar header at byte 0 fails its checksum");
  EXPECT_EQ(Message(ParseTar(tar.substr(0, 1200), "t.tar").status()), "t.tar: truncated tar archive at byte 1536");
  EXPECT_EQ(Message(ParseTar(tar.substr(0, 2148), "t.tar").status()),
            "t.tar: tar entry at byte 1536 claims 700 bytes past the end of the archive");
  EXPECT_EQ(Message(ParseTar(tar.substr(0, 100), "t.tar").status()), "t.tar: truncated tar archive at byte 0");
}

TEST(Archive, ExtractionIsAllOrNothing) {
  std::string dir = TempDir() + "/extract";
  WriteFile(dir + "/good.tar.gz", Gzip(Tar({{"set/a.bin", "abc"}, {"set/sub/b.bin", "de"}})));
  ASSERT_TRUE(ExtractTarGz(dir + "/good.tar.gz", dir).ok());
  EXPECT_EQ(*ReadFileBytes(dir + "/set/sub/b.bin"), "de");
  // A second extraction does not replace what is there.
  EXPECT_NE(Message(ExtractTarGz(dir + "/good.tar.gz", dir)).find("already exists; not replacing it"), std::string::npos);
  // An archive with an escaping entry leaves nothing behind, not even part of it.
  WriteFile(dir + "/evil.tar.gz", Gzip(Tar({{"other/a.bin", "abc"}, {"other/../../x", "y"}})));
  EXPECT_FALSE(ExtractTarGz(dir + "/evil.tar.gz", dir).ok());
  EXPECT_FALSE(fs::exists(dir + "/other"));
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_EQ(e.path().filename().string().find(".unpack-"), std::string::npos) << e.path();
  }
}

// python3 -m http.server on a free loopback port, serving `dir`.
class LocalHttpServer {
 public:
  explicit LocalHttpServer(const std::string& dir) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    close(s);
    std::string port = std::to_string(port_);
    const char* python = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    std::vector<const char*> argv = {python, "-m", "http.server", port.c_str(), "--bind", "127.0.0.1",
                                     "--directory", dir.c_str(), nullptr};
    if (posix_spawnp(&pid_, python, nullptr, nullptr, const_cast<char**>(argv.data()), environ) != 0) pid_ = -1;
    for (int i = 0; i < 100 && pid_ > 0; ++i) {  // wait up to 10 s for it to listen
      int c = socket(AF_INET, SOCK_STREAM, 0);
      bool up = connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
      close(c);
      if (up) {
        ready_ = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ~LocalHttpServer() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  bool ready() const { return ready_; }
  std::string Url(const std::string& file) const { return "http://127.0.0.1:" + std::to_string(port_) + "/" + file; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  bool ready_ = false;
};

TEST(Archive, EnsureCifar100DownloadsVerifiesAndUnpacks) {
  std::string served = TempDir() + "/served";
  std::string archive = Gzip(Tar({{"cifar-100-binary/train.bin", CifarBytes(3, true, {5, 6, 7})},
                                  {"cifar-100-binary/test.bin", CifarBytes(2, true, {8, 9})}}));
  WriteFile(served + "/cifar-100-binary.tar.gz", archive);
  LocalHttpServer server(served);
  ASSERT_TRUE(server.ready()) << "python3 -m http.server did not start";

  std::string data_dir = TempDir() + "/downloaded";
  absl::Status s = EnsureCifar100(data_dir, server.Url("cifar-100-binary.tar.gz"), Md5Hex(archive));
  ASSERT_TRUE(s.ok()) << s;
  auto train = ReadCifar(data_dir, CifarKind::k100, Split::kTrain);
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ((*train)->labels(), (std::vector<int64_t>{5, 6, 7}));
  EXPECT_TRUE(EnsureCifar100(data_dir, "http://127.0.0.1:1/unused", "unused").ok());  // already there

  // A wrong checksum: the archive is moved aside, byte for byte, under a name
  // that says why, and nothing is unpacked.
  std::string bad_dir = TempDir() + "/bad-checksum";
  absl::Status bad = EnsureCifar100(bad_dir, server.Url("cifar-100-binary.tar.gz"), std::string(32, '0'));
  EXPECT_EQ(bad.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(Message(bad).find("MD5 " + Md5Hex(archive) + " is not the published 00000000"), std::string::npos) << bad;
  std::string aside = bad_dir + "/cifar-100-binary.tar.gz.md5-mismatch-" + Md5Hex(archive).substr(0, 8);
  EXPECT_NE(Message(bad).find("moved aside to " + aside), std::string::npos) << bad;
  EXPECT_FALSE(fs::exists(bad_dir + "/cifar-100-binary.tar.gz"));
  EXPECT_FALSE(fs::exists(bad_dir + "/cifar-100-binary"));
  auto kept = ReadFileBytes(aside);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(*kept, archive);

  // A file the user put there themselves (no download): kept too, and a second
  // mismatch of the same bytes does not overwrite the first one set aside.
  std::string user_dir = TempDir() + "/user-file";
  WriteFile(user_dir + "/cifar-100-binary.tar.gz", "not an archive");
  for (int run = 0; run < 2; ++run) {
    absl::Status s2 = EnsureCifar100(user_dir, "http://127.0.0.1:1/unused", std::string(32, '0'));
    EXPECT_EQ(s2.code(), absl::StatusCode::kDataLoss) << s2;
    if (run == 0) WriteFile(user_dir + "/cifar-100-binary.tar.gz", "not an archive");
  }
  std::string user_aside = user_dir + "/cifar-100-binary.tar.gz.md5-mismatch-" + Md5Hex("not an archive").substr(0, 8);
  EXPECT_EQ(*ReadFileBytes(user_aside), "not an archive");
  EXPECT_EQ(*ReadFileBytes(user_aside + "-1"), "not an archive");

  // A missing file on the server, then no server at all: the error says what to do.
  absl::Status missing = EnsureCifar100(TempDir() + "/missing", server.Url("nope.tar.gz"), Md5Hex(archive));
  EXPECT_EQ(missing.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(Message(missing).find("404"), std::string::npos) << missing;
  absl::Status offline = EnsureCifar100(TempDir() + "/offline", "http://127.0.0.1:1/cifar-100-binary.tar.gz", Md5Hex(archive));
  EXPECT_EQ(offline.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(Message(offline).find("Without a network: download " + std::string(kCifar100Url) + " (MD5 " +
                                  kCifar100Md5 + ") and put it at " + TempDir() + "/offline/cifar-100-binary.tar.gz"),
            std::string::npos)
      << offline;
  for (const auto& e : fs::directory_iterator(TempDir() + "/offline")) {
    EXPECT_EQ(e.path().filename().string().find(".part-"), std::string::npos) << e.path();
  }
}

}  // namespace
}  // namespace quanta::data
