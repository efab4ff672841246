// Integration tests of taskmoe-server's transport and repository security: TLS and mutual TLS
// (certificates made by the openssl CLI for each run), the request size limit, AdminService on
// its own port, and symlinks that try to leave the model repository.
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "taskmoe/v1/translation.grpc.pb.h"
#include "tests/server/server_process.h"
#include "tests/server/test_repository.h"

namespace taskmoe::server::testing {
namespace {

// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, both signed by
// the CA, plus a second CA that signed nothing the server trusts.
struct Certificates {
  std::string dir;
  std::string Path(const std::string& name) const { return dir + "/" + name; }
};

bool RunShell(const std::string& command) { return std::system((command + " 2>&1").c_str()) == 0; }

Certificates MakeCertificates() {
  Certificates c{MakeTempDir("certs")};
  const std::string d = c.dir;
  const std::string ext = d + "/server.ext";
  std::ofstream(ext) << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  const std::string quiet = " >/dev/null";
  for (const std::string ca : {"ca", "other-ca"}) {
    EXPECT_TRUE(
        RunShell(absl::StrCat("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=", ca,
                              " -keyout ", d, "/", ca, ".key -out ", d, "/", ca, ".pem", quiet)));
  }
  for (const std::string who : {"server", "client"}) {
    EXPECT_TRUE(
        RunShell(absl::StrCat("openssl req -newkey rsa:2048 -nodes -subj /CN=", who, " -keyout ", d,
                              "/", who, ".key -out ", d, "/", who, ".csr", quiet)));
    EXPECT_TRUE(
        RunShell(absl::StrCat("openssl x509 -req -days 2 -in ", d, "/", who, ".csr -CA ", d,
                              "/ca.pem -CAkey ", d, "/ca.key -CAcreateserial -out ", d, "/", who,
                              ".pem", who == "server" ? " -extfile " + ext : "", quiet)));
  }
  return c;
}

std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(const Certificates& c,
                                                         const std::string& ca,
                                                         bool with_client_certificate) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ReadFile(c.Path(ca + ".pem"));
  if (with_client_certificate) {
    options.pem_cert_chain = ReadFile(c.Path("client.pem"));
    options.pem_private_key = ReadFile(c.Path("client.key"));
  }
  return grpc::SslCredentials(options);
}

grpc::Status ListTasks(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::TranslationService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  v1::ListTasksResponse response;
  return stub->ListTasks(&context, {}, &response);
}

using SecurityTest = RandomRepositoryTest;

TEST_F(SecurityTest, TlsServesOnlyTlsClients) {
  const Certificates c = MakeCertificates();
  auto server = ServerProcess::Start(
      repository_,
      {"--tls_cert_file=" + c.Path("server.pem"), "--tls_key_file=" + c.Path("server.key")},
      absl::Seconds(120), TlsCredentials(c, "ca", false));
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(ListTasks((*server)->channel()).ok());
  EXPECT_NE((*server)->Log().find(", TLS,"), std::string::npos) << (*server)->Log();

  // A plaintext client, and a client that does not trust the server's CA, get nowhere.
  EXPECT_EQ(ListTasks(grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()))
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(
      ListTasks(grpc::CreateChannel((*server)->address(), TlsCredentials(c, "other-ca", false)))
          .error_code(),
      grpc::StatusCode::UNAVAILABLE);

  // taskmoe-client speaks TLS with --tls_ca_file.
  const std::string out = MakeTempDir("client") + "/out.txt";
  EXPECT_TRUE(RunShell(absl::StrCat(TASKMOE_CLIENT_BINARY, " --target=", (*server)->address(),
                                    " --tls_ca_file=", c.Path("ca.pem"), " --list_tasks > ", out)));
  EXPECT_NE(ReadFile(out).find("en-de"), std::string::npos);
}

TEST_F(SecurityTest, MutualTlsRequiresAClientCertificateFromTheClientCa) {
  const Certificates c = MakeCertificates();
  auto server = ServerProcess::Start(
      repository_,
      {"--tls_cert_file=" + c.Path("server.pem"), "--tls_key_file=" + c.Path("server.key"),
       "--tls_client_ca_file=" + c.Path("ca.pem")},
      absl::Seconds(120), TlsCredentials(c, "ca", true));
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(ListTasks((*server)->channel()).ok());
  EXPECT_NE((*server)->Log().find(", mutual TLS,"), std::string::npos);
  EXPECT_EQ(ListTasks(grpc::CreateChannel((*server)->address(), TlsCredentials(c, "ca", false)))
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);

  const std::string base = absl::StrCat(TASKMOE_CLIENT_BINARY, " --target=", (*server)->address(),
                                        " --tls_ca_file=", c.Path("ca.pem"), " --list_tasks");
  EXPECT_TRUE(RunShell(absl::StrCat(base, " --tls_cert_file=", c.Path("client.pem"),
                                    " --tls_key_file=", c.Path("client.key"), " >/dev/null")));
  EXPECT_FALSE(RunShell(base + " >/dev/null"));
}

TEST_F(SecurityTest, BadTlsFlagsAndFilesStopTheServerWithAClearMessage) {
  const Certificates c = MakeCertificates();
  const std::string repo = "--model_repository=" + repository_;
  ExitResult half = RunServerToExit(
      {repo, "--port=0", "--metrics_port=-1", "--tls_cert_file=" + c.Path("server.pem")},
      absl::Seconds(60));
  EXPECT_EQ(half.code, 2);
  EXPECT_NE(half.log.find("--tls_cert_file and --tls_key_file go together"), std::string::npos)
      << half.log;
  ExitResult missing = RunServerToExit(
      {repo, "--port=0", "--metrics_port=-1", "--tls_cert_file=" + c.Path("server.pem"),
       "--tls_key_file=" + c.dir + "/nonexistent.key"},
      absl::Seconds(60));
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.log.find("--tls_key_file: cannot read"), std::string::npos) << missing.log;
  ExitResult not_pem = RunServerToExit(
      {repo, "--port=0", "--metrics_port=-1", "--tls_cert_file=" + c.Path("server.ext"),
       "--tls_key_file=" + c.Path("server.key")},
      absl::Seconds(60));
  EXPECT_EQ(not_pem.code, 1);
  EXPECT_NE(not_pem.log.find("is not a PEM file"), std::string::npos) << not_pem.log;
}

TEST_F(SecurityTest, RequestsOverTheSizeLimitAreRefusedUnread) {
  auto server = ServerProcess::Start(repository_, {"--max_request_bytes=4096"});
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::TranslationService::NewStub((*server)->channel());
  v1::TranslateRequest request;
  request.set_task("en-de");
  for (int i = 0; i < 5; ++i) request.add_texts(std::string(1000, 'a'));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  v1::TranslateResponse response;
  const grpc::Status status = stub->Translate(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  // The server carries on.
  EXPECT_TRUE(ListTasks((*server)->channel()).ok());
}

TEST_F(SecurityTest, AdminServiceOnItsOwnPortOnly) {
  auto server = ServerProcess::Start(repository_, {"--enable_admin", "--admin_port=0"});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->admin_port(), 0) << (*server)->Log();
  auto reload = [](const std::shared_ptr<grpc::Channel>& channel) {
    auto admin = v1::AdminService::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    v1::ReloadTaskRequest request;
    request.set_task("en-de");
    v1::ReloadTaskResponse response;
    return admin->ReloadTask(&context, request, &response);
  };
  EXPECT_EQ(reload((*server)->channel()).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  const grpc::Status on_admin_port = reload(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", (*server)->admin_port()), grpc::InsecureChannelCredentials()));
  EXPECT_TRUE(on_admin_port.ok()) << on_admin_port.error_message();

  ExitResult without_admin =
      RunServerToExit({"--model_repository=" + repository_, "--admin_port=0"}, absl::Seconds(60));
  EXPECT_EQ(without_admin.code, 2);
  EXPECT_NE(without_admin.log.find("--admin_port is set but --enable_admin is not"),
            std::string::npos);
}

TEST_F(SecurityTest, SymlinksOutOfTheRepositoryAreRefused) {
  namespace fs = std::filesystem;
  // A task directory that is a symlink to a model outside the repository.
  const std::string outside = MakeTempDir("outside");
  fs::rename(repository_ + "/fr-en", outside + "/fr-en");
  fs::create_directory_symlink(outside + "/fr-en", repository_ + "/fr-en");
  ExitResult dir_link = RunServerToExit(
      {"--model_repository=" + repository_, "--port=0", "--metrics_port=-1", "--require_all_tasks"},
      absl::Seconds(60));
  EXPECT_EQ(dir_link.code, 1);
  EXPECT_NE(dir_link.log.find("outside the model repository"), std::string::npos) << dir_link.log;

  // A file that is a symlink out of the repository, replaced into a served task: the reload
  // is refused and the old version keeps serving.
  fs::remove(repository_ + "/fr-en");
  fs::rename(outside + "/fr-en", repository_ + "/fr-en");
  auto server = ServerProcess::Start(repository_, {"--enable_admin"});
  ASSERT_TRUE(server.ok()) << server.status();
  fs::rename(repository_ + "/en-de/spm.model", outside + "/spm.model");
  fs::create_symlink(outside + "/spm.model", repository_ + "/en-de/spm.model");
  auto admin = v1::AdminService::NewStub((*server)->channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  v1::ReloadTaskRequest request;
  request.set_task("en-de");
  v1::ReloadTaskResponse response;
  const grpc::Status status = admin->ReloadTask(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("outside the model repository"), std::string::npos)
      << status.error_message();
  EXPECT_TRUE(ListTasks((*server)->channel()).ok());

  // Symlinks that stay inside the repository (as Kubernetes volumes make them) are fine.
  fs::remove(repository_ + "/en-de/spm.model");
  fs::rename(outside + "/spm.model", repository_ + "/spm-shared.model");
  fs::create_symlink("../spm-shared.model", repository_ + "/en-de/spm.model");
  grpc::ClientContext again;
  again.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  const grpc::Status inside = admin->ReloadTask(&again, request, &response);
  EXPECT_TRUE(inside.ok()) << inside.error_message();
}

}  // namespace
}  // namespace taskmoe::server::testing
