// SHA-256 through OpenSSL's EVP interface.
#include "models/format/sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "util/scoped_fd.h"

namespace taskmoe::models {
namespace {

constexpr size_t kReadChunkBytes = 1 << 20;

// One digest in progress; Finish() gives its "sha256:<hex>" form.
class Sha256Hasher {
 public:
  Sha256Hasher() : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    ok_ = ctx_ != nullptr && EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1;
  }

  void Update(const void* data, size_t size) {
    ok_ = ok_ && EVP_DigestUpdate(ctx_.get(), data, size) == 1;
  }

  absl::StatusOr<std::string> Finish() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_size = 0;
    if (!ok_ || EVP_DigestFinal_ex(ctx_.get(), digest, &digest_size) != 1 || digest_size != 32) {
      return absl::InternalError("OpenSSL: SHA-256 failed");
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out = kSha256Prefix;
    for (unsigned int i = 0; i < digest_size; ++i) {
      out.push_back(kHex[digest[i] >> 4]);
      out.push_back(kHex[digest[i] & 0xf]);
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
  bool ok_ = false;
};

}  // namespace

absl::StatusOr<std::string> FileSha256(const std::string& path) {
  util::ScopedFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
  }
  Sha256Hasher hasher;
  std::vector<char> buffer(kReadChunkBytes);
  for (;;) {
    const ssize_t n = read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat(path, ": read failed"));
    }
    if (n == 0) break;
    hasher.Update(buffer.data(), static_cast<size_t>(n));
  }
  return hasher.Finish();
}

absl::StatusOr<std::string> Sha256(std::string_view bytes) {
  Sha256Hasher hasher;
  hasher.Update(bytes.data(), bytes.size());
  return hasher.Finish();
}

}  // namespace taskmoe::models
