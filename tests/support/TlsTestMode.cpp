#include "support/TlsTestMode.h"

#include "support/TestCertificates.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <vector>

namespace wsgate::test {

namespace {

/// The process's scratch directory; removed with everything in it when
/// the process exits normally.
class ScratchDirectory {
public:
    ScratchDirectory() {
        std::string pattern =
            (std::filesystem::temp_directory_path() / "wsgate-test-XXXXXX").string();
        if (mkdtemp(pattern.data()) == nullptr) {
            std::perror("mkdtemp");
            std::abort();
        }
        path_ = pattern;
    }
    ~ScratchDirectory() {
        std::error_code ignored;
        std::filesystem::remove_all(path_, ignored);
    }
    ScratchDirectory(const ScratchDirectory&) = delete;
    ScratchDirectory& operator=(const ScratchDirectory&) = delete;
    const std::filesystem::path& path() const noexcept { return path_; }

private:
    std::filesystem::path path_;
};

ScratchDirectory& scratch() {
    static ScratchDirectory directory;
    return directory;
}

} // namespace

bool tlsTestMode() {
    static const bool on = [] {
        const char* value = std::getenv("WSGATE_TEST_TLS");
        return value != nullptr && std::string_view(value) == "1";
    }();
    return on;
}

const char* testScheme() {
    return tlsTestMode() ? "wss" : "ws";
}

Server::SslMode testSslMode() {
    return tlsTestMode() ? Server::SslMode::SecureMode : Server::SslMode::NonSecureMode;
}

SslConfiguration testServerSslConfiguration() {
    const TestCertificates& certificates = testCertificates();
    SslConfiguration configuration;
    CHECK(configuration.setLocalCertificateChain(certificates.serverEcdsa.certificatePem));
    CHECK(configuration.setPrivateKey(certificates.serverEcdsa.privateKeyPem));
    return configuration;
}

bool configureForTestMode(Server& server) {
    if (!tlsTestMode()) {
        return true;
    }
    const bool accepted = server.setSslConfiguration(testServerSslConfiguration());
    CHECK_MESSAGE(accepted, "setSslConfiguration: ", server.errorString());
    return accepted;
}

TlsClientOptions defaultTlsClientOptions() {
    TlsClientOptions options;
    options.caPem = testCertificates().caPem;
    options.serverName = "localhost";
    options.alpn = {"http/1.1"};
    return options;
}

namespace {

struct SessionCache {
    std::mutex mutex;
    std::map<std::uint16_t, std::shared_ptr<const TlsClientSession>> byPort;
};

SessionCache& sessionCache() {
    static SessionCache cache;
    return cache;
}

} // namespace

std::shared_ptr<const TlsClientSession> testSessionFor(std::uint16_t port) {
    SessionCache& cache = sessionCache();
    std::lock_guard lock(cache.mutex);
    const auto it = cache.byPort.find(port);
    return it != cache.byPort.end() ? it->second : nullptr;
}

void rememberTestSession(std::uint16_t port, std::shared_ptr<const TlsClientSession> session) {
    if (!session) {
        return;
    }
    SessionCache& cache = sessionCache();
    std::lock_guard lock(cache.mutex);
    cache.byPort[port] = std::move(session);
}

std::string writeTestFile(std::string_view name, std::string_view content) {
    static std::mutex mutex;
    std::lock_guard lock(mutex);
    const std::filesystem::path path = scratch().path() / std::string(name);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    if (!out) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        std::abort();
    }
    return path.string();
}

const TestCertificateFiles& testCertificateFiles() {
    static const TestCertificateFiles files = [] {
        const TestCertificates& certificates = testCertificates();
        TestCertificateFiles out;
        out.certificate = writeTestFile("server.pem", certificates.serverEcdsa.certificatePem);
        out.key = writeTestFile("server.key", certificates.serverEcdsa.privateKeyPem);
        out.ca = writeTestFile("ca.pem", certificates.caPem);
        return out;
    }();
    return files;
}

} // namespace wsgate::test
