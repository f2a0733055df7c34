// wss:// over real TLS 1.2 on loopback: an in-process Server in SecureMode
// and the echo-server process with --cert/--key, driven by the raw client
// over the test's own mbedTLS client (TlsClient), plus openssl s_client as a
// client the project did not write. Certificates are made at test time.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "net/LoopData.h"
#include "support/ChildProcess.h"
#include "support/EchoServerProcess.h"
#include "support/EchoTargets.h"
#include "support/LoopThread.h"
#include "support/RawClient.h"
#include "support/TestCertificates.h"
#include "support/TlsClient.h"
#include "support/TlsTestMode.h"
#include "wsgate/Server.h"
#include "wsgate/SslConfiguration.h"
#include "wsgate/WebSocket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <mbedtls/x509_crt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <doctest/doctest.h>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace wsgate::test;
using namespace std::chrono_literals;
using wsgate::ClientInfo;
using wsgate::CloseCode;
using wsgate::PreSharedKeyAuthenticator;
using wsgate::Server;
using wsgate::SslAlert;
using wsgate::SslConfiguration;
using wsgate::SslError;
using wsgate::WebSocket;
using Clock = std::chrono::steady_clock;
using VerifyMode = SslConfiguration::PeerVerifyMode;

namespace {

// SIGPIPE is checked in child processes only ("clients that hang up"); in
// this process a write to a client that has gone, by the library or to
// s_client's pipe, must not end the whole run.
const bool sigpipeIgnored = [] {
    ::signal(SIGPIPE, SIG_IGN);
    return true;
}();

// RFC 5246 §7.2 alert descriptions the tests expect.
constexpr std::uint8_t alertFatal = 2;
constexpr std::uint8_t closeNotify = 0;
constexpr std::uint8_t handshakeFailure = 40;
constexpr std::uint8_t badCertificate = 42;
constexpr std::uint8_t accessDenied = 49;
constexpr std::uint8_t unknownPskIdentity = 115;
constexpr std::uint8_t noApplicationProtocol = 120;

/// This process's resident set, from /proc/self/statm.
long residentBytes() {
    long pages = 0;
    long resident = 0;
    if (std::FILE* file = std::fopen("/proc/self/statm", "r")) {
        if (std::fscanf(file, "%ld %ld", &pages, &resident) != 2) {
            resident = 0;
        }
        std::fclose(file);
    }
    return resident * ::sysconf(_SC_PAGESIZE);
}

std::chrono::milliseconds since(Clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

std::uint16_t localPortOf(int fd) {
    sockaddr_storage address{};
    socklen_t size = sizeof address;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
    if (address.ss_family == AF_INET6) {
        return ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port);
    }
    return ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port);
}

/// The subject and DER of the first certificate in `pem`, read with mbedTLS
/// independently of the library under test.
struct ParsedCertificate {
    std::string subject;
    std::vector<std::uint8_t> der;
};

ParsedCertificate parseCertificate(const std::string& pem) {
    mbedtls_x509_crt certificate;
    mbedtls_x509_crt_init(&certificate);
    ParsedCertificate out;
    const int rc = mbedtls_x509_crt_parse(
        &certificate, reinterpret_cast<const unsigned char*>(pem.c_str()), pem.size() + 1);
    REQUIRE(rc == 0);
    char text[512];
    const int size = mbedtls_x509_dn_gets(text, sizeof text, &certificate.subject);
    if (size > 0) {
        out.subject.assign(text, static_cast<std::size_t>(size));
    }
    out.der.assign(certificate.raw.p, certificate.raw.p + certificate.raw.len);
    mbedtls_x509_crt_free(&certificate);
    return out;
}

std::string describe(const SslError& e) {
    return e.errorString() + " (depth " + std::to_string(e.depth) + ", " + e.certificateSubject +
           ")";
}

std::string describe(const SslAlert& a) {
    return std::to_string(static_cast<int>(a.level)) + "/" + a.description();
}

/// A SecureMode Server on a loop thread that takes and echoes every
/// connection, with every TLS signal recorded in order. Touch `events`,
/// `policy` and `sockets` only on the loop thread (call()).
struct TlsServer {
    struct Events {
        /// Every signal as one line, in the order they fired.
        std::vector<std::string> log;
        std::vector<CloseCode> serverErrors;
        std::vector<std::pair<ClientInfo, SslError>> peerVerifyErrors;
        std::vector<std::pair<ClientInfo, std::vector<SslError>>> sslErrors;
        std::vector<std::pair<ClientInfo, SslError>> interruptions;
        std::vector<std::pair<ClientInfo, std::string>> pskIdentities;
        std::vector<std::pair<ClientInfo, SslAlert>> alertsReceived;
        std::vector<std::pair<ClientInfo, SslAlert>> alertsSent;
        int newConnections = 0;
    };
    /// What the application answers.
    struct Policy {
        /// Take each connection as it is pending; false leaves them pending.
        bool takeConnections = true;
        bool ignoreSslErrors = false;
        bool continueInterrupted = false;
        std::map<std::string, std::string> preSharedKeys;
    };

    // Declared before `thread`, so that they outlive the loop thread whose
    // teardown empties them.
    Events events;
    Policy policy;
    std::unique_ptr<Server> server;
    std::vector<std::unique_ptr<WebSocket>> sockets;
    LoopThread thread;
    std::uint16_t port = 0;

    explicit TlsServer(const SslConfiguration& configuration,
                       const std::function<void(Server&)>& configure = {}) {
        thread.addTeardown([this] {
            sockets.clear();
            server.reset();
        });
        port = thread.call([&]() -> std::uint16_t {
            server = std::make_unique<Server>("wsgate-tls-test", Server::SslMode::SecureMode,
                                              thread.loop());
            const bool accepted = server->setSslConfiguration(configuration);
            CHECK_MESSAGE(accepted, "setSslConfiguration: ", server->errorString());
            if (configure) {
                configure(*server);
            }
            connectSignals();
            if (!server->listen("127.0.0.1", 0)) {
                FAIL_CHECK("listen: ", server->errorString());
                return 0;
            }
            return server->serverPort();
        });
    }
    ~TlsServer() { thread.finish(); }
    TlsServer(const TlsServer&) = delete;
    TlsServer& operator=(const TlsServer&) = delete;

    template <class F>
    auto call(F&& f) {
        return thread.call(std::forward<F>(f));
    }
    bool waitFor(const std::function<bool()>& predicate, std::chrono::milliseconds timeout = 5s) {
        return thread.waitUntil(predicate, timeout);
    }
    bool waitForSockets(std::size_t n) {
        return waitFor([&] { return sockets.size() >= n; });
    }
    bool waitForServerErrors(std::size_t n) {
        return waitFor([&] { return events.serverErrors.size() >= n; });
    }

private:
    void connectSignals() {
        Server& s = *server;
        s.onServerError([this](CloseCode code) {
            events.serverErrors.push_back(code);
            events.log.push_back("serverError " + std::to_string(static_cast<int>(code)));
        });
        s.onNewConnection([this] {
            if (!policy.takeConnections) {
                ++events.newConnections;
                return;
            }
            while (auto socket = server->nextPendingConnection()) {
                ++events.newConnections;
                InProcessEcho::makeEcho(*socket);
                sockets.push_back(std::move(socket));
            }
        });
        s.onPeerVerifyError([this](const ClientInfo& client, const SslError& error) {
            events.peerVerifyErrors.emplace_back(client, error);
            events.log.push_back("peerVerifyError " + describe(error));
        });
        s.onSslErrors([this](const ClientInfo& client, const std::vector<SslError>& errors) {
            events.sslErrors.emplace_back(client, errors);
            std::string line = "sslErrors";
            for (const auto& e : errors) {
                line.append(" ").append(describe(e));
            }
            events.log.push_back(line);
            return policy.ignoreSslErrors;
        });
        s.onHandshakeInterruptedOnError([this](const ClientInfo& client, const SslError& error) {
            events.interruptions.emplace_back(client, error);
            events.log.push_back("handshakeInterruptedOnError " + describe(error));
            return policy.continueInterrupted;
        });
        s.onPreSharedKeyAuthenticationRequired([this](const ClientInfo& client,
                                                      PreSharedKeyAuthenticator& authenticator) {
            events.pskIdentities.emplace_back(client, authenticator.identity());
            events.log.push_back("preSharedKeyAuthenticationRequired " + authenticator.identity());
            CHECK(authenticator.maximumPreSharedKeyLength() >= 16);
            const auto key = policy.preSharedKeys.find(authenticator.identity());
            if (key != policy.preSharedKeys.end()) {
                authenticator.setPreSharedKey(key->second);
            }
        });
        s.onAlertReceived([this](const ClientInfo& client, const SslAlert& alert) {
            events.alertsReceived.emplace_back(client, alert);
            events.log.push_back("alertReceived " + describe(alert));
        });
        s.onAlertSent([this](const ClientInfo& client, const SslAlert& alert) {
            events.alertsSent.emplace_back(client, alert);
            events.log.push_back("alertSent " + describe(alert));
        });
    }
};

std::string join(const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& line : lines) {
        out += (out.empty() ? "" : " | ") + line;
    }
    return out;
}

/// The index of the first log line starting with `prefix`, -1 when none.
int indexOf(const std::vector<std::string>& log, std::string_view prefix) {
    for (std::size_t i = 0; i < log.size(); ++i) {
        if (log[i].rfind(prefix, 0) == 0) {
            return static_cast<int>(i);
        }
    }
    return -1;
}

bool hasAlert(const std::vector<std::pair<ClientInfo, SslAlert>>& alerts, SslAlert::Level level,
              std::uint8_t type) {
    return std::any_of(alerts.begin(), alerts.end(), [&](const auto& a) {
        return a.second.level == level && a.second.type == type;
    });
}

SslConfiguration
serverConfiguration(const TestIdentity& identity = testCertificates().serverEcdsa) {
    SslConfiguration configuration;
    REQUIRE(configuration.setLocalCertificateChain(identity.certificatePem));
    REQUIRE(configuration.setPrivateKey(identity.privateKeyPem));
    return configuration;
}

/// A server configuration that asks for client certificates.
SslConfiguration clientAuthConfiguration(VerifyMode mode, bool interrupt = false) {
    SslConfiguration configuration = serverConfiguration();
    REQUIRE(configuration.setCaCertificates(testCertificates().caPem));
    configuration.setPeerVerifyMode(mode);
    configuration.setHandshakeMustInterruptOnError(interrupt);
    return configuration;
}

/// The client's defaults: verify the server against the test CA as
/// localhost, SNI localhost, ALPN http/1.1.
TlsClientOptions clientOptions(const TestIdentity* identity = nullptr) {
    TlsClientOptions options = defaultTlsClientOptions();
    if (identity != nullptr) {
        options.certificatePem = identity->certificatePem;
        options.privateKeyPem = identity->privateKeyPem;
    }
    return options;
}

/// A TCP connection to the server; TLS is for the test to start.
RawClient tcpTo(std::uint16_t port) {
    RawClient client;
    REQUIRE(client.connectPlain(port));
    return client;
}

/// A client through its TLS and WebSocket handshakes, REQUIREd to succeed.
RawClient openWss(std::uint16_t port, const TlsClientOptions& options = clientOptions()) {
    RawClient client = tcpTo(port);
    const bool handshook = client.startTls(options);
    INFO("TLS: ", client.tls()->errorString());
    REQUIRE(handshook);
    REQUIRE(client.upgrade());
    return client;
}

/// CHECKs that the server dropped a client whose TLS handshake it refused:
/// either our handshake failed on its alert, or it completed (the server's
/// Finished goes out before the application judges the certificate) and the
/// alert followed, with no plaintext, then EOF. The alert must be
/// `description`.
void expectRefused(RawClient& client, bool handshook, std::uint8_t description) {
    TlsClient& tls = *client.tls();
    INFO("our handshake ", handshook ? "completed" : "failed: " + tls.errorString());
    CHECK_FALSE(tls.timedOut());
    if (handshook) {
        bool eof = false;
        const std::string plaintext = client.readAll(3s, &eof);
        CHECK(eof);
        CHECK_MESSAGE(plaintext.empty(), "plaintext from a refused client: ", hex(plaintext));
    }
    REQUIRE_MESSAGE(tls.alertReceived().has_value(), "no alert came");
    CHECK(int(tls.alertReceived()->level) == int(alertFatal));
    CHECK(int(tls.alertReceived()->description) == int(description));
}

void checkClientInfo(const ClientInfo& info, std::uint16_t clientPort,
                     std::string_view serverName = "localhost") {
    CHECK(info.address == "127.0.0.1");
    CHECK(info.port == clientPort);
    CHECK(info.serverName == serverName);
}

/// Lengths at the frame-header boundaries of RFC 6455 §5.2, and 1 MiB.
const std::vector<std::size_t> echoLengths = {0, 125, 126, 65535, 65536, 1024 * 1024};

void echoEveryLength(RawClient& client) {
    for (std::size_t length : echoLengths) {
        CAPTURE(length);
        const std::string text = randomUtf8(length);
        CHECK(client.sendText(text));
        CHECK(client.expectText(text));
        const std::string binary = randomBytes(length);
        CHECK(client.sendBinary(binary));
        CHECK(client.expectBinary(binary));
    }
}

} // namespace

TEST_SUITE("wss: echo over TLS") {
    TEST_CASE("text and binary of every boundary length come back byte for byte") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        f.call([&] {
            CHECK(f.server->secureMode() == Server::SslMode::SecureMode);
            CHECK(f.server->serverUrl() == "wss://127.0.0.1:" + std::to_string(f.port));
        });
        RawClient client = openWss(f.port);
        TlsClient& tls = *client.tls();
        CHECK(tls.protocol() == "TLSv1.2");
        CHECK(tls.alpn() == "http/1.1");
        CHECK(tls.serverCertificateSubject() == testCertificates().serverEcdsa.subject);
        CHECK(tls.verifyResult() == 0);
        REQUIRE(f.waitForSockets(1));
        f.call([&] {
            const WebSocket& ws = *f.sockets[0];
            CHECK(ws.isSecure());
            CHECK(ws.sslProtocol() == "TLSv1.2");
            CHECK_FALSE(ws.sslCipher().empty());
            CHECK(ws.sslCipher() == tls.cipher());
            CHECK(ws.sslNextProtocol() == "http/1.1");
            CHECK(ws.sslServerName() == "localhost");
            CHECK_FALSE(ws.sslSessionResumed());
            CHECK_FALSE(ws.peerCertificate().has_value());
            CHECK(ws.requestUrl() == "wss://127.0.0.1:" + std::to_string(f.port) + "/");
            CHECK(ws.peerPort() == localPortOf(client.fd()));
        });
        echoEveryLength(client);
        f.call([&] {
            CHECK(f.events.serverErrors.empty());
            CHECK(f.events.peerVerifyErrors.empty());
            CHECK(f.events.sslErrors.empty());
        });
    }

    TEST_CASE("a client that offers no ALPN and no SNI gets neither") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        TlsClientOptions options = clientOptions();
        options.alpn.clear();
        options.serverName.clear();
        RawClient client = openWss(f.port, options);
        CHECK(client.tls()->alpn().empty());
        REQUIRE(f.waitForSockets(1));
        f.call([&] {
            CHECK(f.sockets[0]->sslNextProtocol().empty());
            CHECK(f.sockets[0]->sslServerName().empty());
        });
        CHECK(client.sendText("no extensions"));
        CHECK(client.expectText("no extensions"));
    }

    TEST_CASE("connections that go quiet after traffic give their record buffers' pages back") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        f.call([&] { f.thread.loop().data().tlsIdleReleaseMs = 100; });
        constexpr int count = 16;
        std::vector<RawClient> clients;
        for (int i = 0; i < count; ++i) {
            clients.push_back(openWss(f.port));
        }
        REQUIRE(f.waitForSockets(count));
        // Full records both ways fault every page of the server's buffers in.
        const std::string binary = randomBytes(40000);
        for (auto& client : clients) {
            CHECK(client.sendBinary(binary));
            CHECK(client.expectBinary(binary));
        }
        const long busy = residentBytes();
        std::this_thread::sleep_for(600ms);
        const long quiet = residentBytes();
        INFO("resident ", busy, " B after traffic, ", quiet, " B after 600 ms quiet");
        // Each connection gives back six or more pages; without the release
        // nothing here would shrink. Half of that, for slack.
        CHECK(busy - quiet >= count * 3 * 4096);
        // And they work on, on fresh pages.
        for (auto& client : clients) {
            CHECK(client.sendBinary(binary));
            CHECK(client.expectBinary(binary));
        }
    }

    TEST_CASE("an RSA certificate serves as well") {
        TlsServer f(serverConfiguration(testCertificates().serverRsa));
        REQUIRE(f.port != 0);
        RawClient client = openWss(f.port);
        CHECK(client.tls()->serverCertificateSubject() == testCertificates().serverRsa.subject);
        CHECK(client.tls()->cipher().find("RSA") != std::string::npos);
        REQUIRE(f.waitForSockets(1));
        f.call([&] { CHECK(f.sockets[0]->sslCipher() == client.tls()->cipher()); });
        const std::string binary = randomBytes(70000);
        CHECK(client.sendBinary(binary));
        CHECK(client.expectBinary(binary));
    }

    TEST_CASE("the echo-server process with --cert and --key") {
        const TestCertificateFiles& files = testCertificateFiles();
        EchoServerProcess server({"--cert", files.certificate, "--key", files.key, "--quiet"});
        REQUIRE(server.started());
        CHECK(server.url() == "wss://127.0.0.1:" + std::to_string(server.port()));
        RawClient client = openWss(server.port());
        CHECK(client.tls()->protocol() == "TLSv1.2");
        CHECK(client.tls()->alpn() == "http/1.1");
        echoEveryLength(client);
        CHECK(client.sendClose(1000));
        CHECK(client.expectClose(1000).isClose());
        CHECK(client.expectTcpClosed(serverCloseTimeout).closed);
        CHECK(client.tls()->closeNotifyReceived());
    }

    TEST_CASE("the echo-server process with --client-ca requires a client certificate") {
        const TestCertificateFiles& files = testCertificateFiles();
        EchoServerProcess server(
            {"--cert", files.certificate, "--key", files.key, "--client-ca", files.ca, "--quiet"});
        REQUIRE(server.started());
        {
            RawClient client = openWss(server.port(), clientOptions(&testCertificates().client));
            CHECK(client.sendText("with a certificate"));
            CHECK(client.expectText("with a certificate"));
        }
        RawClient client = tcpTo(server.port());
        const bool handshook = client.startTls(clientOptions());
        expectRefused(client, handshook, handshakeFailure);
    }
}

TEST_SUITE("wss: client certificates") {
    TEST_CASE("VerifyPeer with a valid certificate: connected, certificate readable") {
        TlsServer f(clientAuthConfiguration(VerifyMode::VerifyPeer));
        REQUIRE(f.port != 0);
        const TestIdentity& identity = testCertificates().client;
        RawClient client = openWss(f.port, clientOptions(&identity));
        REQUIRE(f.waitForSockets(1));
        const auto wallNow = std::chrono::system_clock::now();
        const ParsedCertificate expected = parseCertificate(identity.certificatePem);
        const std::string caSubject = parseCertificate(testCertificates().caPem).subject;
        f.call([&] {
            const auto certificate = f.sockets[0]->peerCertificate();
            REQUIRE(certificate.has_value());
            CHECK(certificate->subject == identity.subject);
            CHECK(certificate->issuer == caSubject);
            CHECK_FALSE(certificate->serialNumber.empty());
            CHECK(certificate->der == expected.der);
            // TestCertificates: valid from a day ago to a year ahead.
            CHECK(certificate->effectiveDate < wallNow - 23h);
            CHECK(certificate->effectiveDate > wallNow - 25h);
            CHECK(certificate->expiryDate > wallNow + 364 * 24h);
            CHECK(certificate->expiryDate < wallNow + 366 * 24h);
            CHECK(f.events.peerVerifyErrors.empty());
            CHECK(f.events.sslErrors.empty());
            CHECK(f.events.serverErrors.empty());
        });
        CHECK(client.sendText("authenticated"));
        CHECK(client.expectText("authenticated"));
    }

    TEST_CASE("VerifyPeer without a certificate: NoPeerCertificate, then sslErrors, dropped") {
        TlsServer f(clientAuthConfiguration(VerifyMode::VerifyPeer));
        REQUIRE(f.port != 0);
        RawClient client = tcpTo(f.port);
        const std::uint16_t clientPort = localPortOf(client.fd());
        const bool handshook = client.startTls(clientOptions());
        expectRefused(client, handshook, handshakeFailure);
        REQUIRE(f.waitForServerErrors(1));
        f.call([&] {
            INFO("signals: ", join(f.events.log));
            REQUIRE(f.events.peerVerifyErrors.size() == 1);
            const auto& [info, error] = f.events.peerVerifyErrors[0];
            checkClientInfo(info, clientPort);
            CHECK(error.code == SslError::Code::NoPeerCertificate);
            CHECK(error.depth == -1);
            REQUIRE(f.events.sslErrors.size() == 1);
            checkClientInfo(f.events.sslErrors[0].first, clientPort);
            REQUIRE(f.events.sslErrors[0].second.size() == 1);
            CHECK(f.events.sslErrors[0].second[0].code == SslError::Code::NoPeerCertificate);
            CHECK(indexOf(f.events.log, "peerVerifyError") < indexOf(f.events.log, "sslErrors"));
            CHECK(f.events.serverErrors[0] == CloseCode::CloseCodeTlsHandshakeFailed);
            CHECK(hasAlert(f.events.alertsSent, SslAlert::Level::Fatal, handshakeFailure));
            CHECK(f.events.newConnections == 0);
        });
    }

    TEST_CASE("VerifyPeer refuses certificates it cannot accept") {
        struct Case {
            const char* name;
            const TestIdentity* identity;
            SslError::Code code;
        };
        const TestCertificates& c = testCertificates();
        const Case cases[] = {
            {"issued by another CA", &c.clientOtherCa,
             SslError::Code::UnableToGetLocalIssuerCertificate},
            {"expired", &c.clientExpired, SslError::Code::CertificateExpired},
            {"self-signed", &c.clientSelfSigned, SslError::Code::SelfSignedCertificate},
            {"for serverAuth only", &c.clientServerAuthOnly, SslError::Code::InvalidPurpose},
        };
        for (const Case& one : cases) {
            CAPTURE(one.name);
            TlsServer f(clientAuthConfiguration(VerifyMode::VerifyPeer));
            REQUIRE(f.port != 0);
            RawClient client = tcpTo(f.port);
            const std::uint16_t clientPort = localPortOf(client.fd());
            const bool handshook = client.startTls(clientOptions(one.identity));
            expectRefused(client, handshook, badCertificate);
            REQUIRE(f.waitForServerErrors(1));
            f.call([&] {
                INFO("signals: ", join(f.events.log));
                REQUIRE_FALSE(f.events.peerVerifyErrors.empty());
                const auto& [info, error] = f.events.peerVerifyErrors[0];
                checkClientInfo(info, clientPort);
                CHECK(error.code == one.code);
                CHECK(error.depth == 0);
                CHECK(error.certificateSubject == one.identity->subject);
                REQUIRE(f.events.sslErrors.size() == 1);
                checkClientInfo(f.events.sslErrors[0].first, clientPort);
                const auto& list = f.events.sslErrors[0].second;
                CHECK(std::any_of(list.begin(), list.end(),
                                  [&](const SslError& e) { return e.code == one.code; }));
                CHECK(indexOf(f.events.log, "peerVerifyError") <
                      indexOf(f.events.log, "sslErrors"));
                CHECK(f.events.serverErrors[0] == CloseCode::CloseCodeTlsHandshakeFailed);
                CHECK(hasAlert(f.events.alertsSent, SslAlert::Level::Fatal, badCertificate));
                CHECK(f.events.newConnections == 0);
            });
            // The server goes on serving good clients.
            RawClient good = openWss(f.port, clientOptions(&testCertificates().client));
            CHECK(good.sendText("still serving"));
            CHECK(good.expectText("still serving"));
        }
    }

    TEST_CASE("a chain through an intermediate: accepted, and refused past peerVerifyDepth") {
        const TestIdentity& identity = testCertificates().clientViaIntermediate;
        SUBCASE("no depth limit") {
            TlsServer f(clientAuthConfiguration(VerifyMode::VerifyPeer));
            REQUIRE(f.port != 0);
            RawClient client = openWss(f.port, clientOptions(&identity));
            REQUIRE(f.waitForSockets(1));
            f.call([&] {
                INFO("signals: ", join(f.events.log));
                CHECK(f.events.peerVerifyErrors.empty());
                REQUIRE(f.sockets[0]->peerCertificate().has_value());
                CHECK(f.sockets[0]->peerCertificate()->subject == identity.subject);
            });
            CHECK(client.sendText("chained"));
            CHECK(client.expectText("chained"));
        }
        SUBCASE("depth 2 for a chain of three") {
            SslConfiguration configuration = clientAuthConfiguration(VerifyMode::VerifyPeer);
            configuration.setPeerVerifyDepth(2);
            TlsServer f(configuration);
            REQUIRE(f.port != 0);
            RawClient client = tcpTo(f.port);
            const bool handshook = client.startTls(clientOptions(&identity));
            expectRefused(client, handshook, badCertificate);
            REQUIRE(f.waitForServerErrors(1));
            f.call([&] {
                INFO("signals: ", join(f.events.log));
                REQUIRE(f.events.sslErrors.size() == 1);
                const auto& list = f.events.sslErrors[0].second;
                CHECK(std::any_of(list.begin(), list.end(), [](const SslError& e) {
                    return e.code == SslError::Code::PathLengthExceeded;
                }));
                CHECK(f.events.newConnections == 0);
            });
        }
    }

    TEST_CASE("onSslErrors returning true keeps the connection") {
        TlsServer f(clientAuthConfiguration(VerifyMode::VerifyPeer));
        REQUIRE(f.port != 0);
        f.call([&] { f.policy.ignoreSslErrors = true; });
        const TestIdentity& identity = testCertificates().clientExpired;
        RawClient client = openWss(f.port, clientOptions(&identity));
        REQUIRE(f.waitForSockets(1));
        f.call([&] {
            INFO("signals: ", join(f.events.log));
            REQUIRE(f.events.sslErrors.size() == 1);
            CHECK(f.events.sslErrors[0].second.at(0).code == SslError::Code::CertificateExpired);
            CHECK(f.events.serverErrors.empty());
            const auto certificate = f.sockets[0]->peerCertificate();
            REQUIRE(certificate.has_value());
            CHECK(certificate->subject == identity.subject);
            CHECK(certificate->expiryDate < std::chrono::system_clock::now());
        });
        echoEveryLength(client);
    }

    TEST_CASE("QueryPeer connects without a certificate and reports nothing") {
        TlsServer f(clientAuthConfiguration(VerifyMode::QueryPeer));
        REQUIRE(f.port != 0);
        RawClient anonymous = openWss(f.port);
        // A bad certificate is recorded, not reported, as in Qt.
        RawClient expired = openWss(f.port, clientOptions(&testCertificates().clientExpired));
        REQUIRE(f.waitForSockets(2));
        f.call([&] {
            CHECK_FALSE(f.sockets[0]->peerCertificate().has_value());
            REQUIRE(f.sockets[1]->peerCertificate().has_value());
            CHECK(f.sockets[1]->peerCertificate()->subject ==
                  testCertificates().clientExpired.subject);
            CHECK(f.events.peerVerifyErrors.empty());
            CHECK(f.events.sslErrors.empty());
            CHECK(f.events.serverErrors.empty());
        });
        CHECK(anonymous.sendText("anonymous"));
        CHECK(anonymous.expectText("anonymous"));
        CHECK(expired.sendText("expired"));
        CHECK(expired.expectText("expired"));
    }

    TEST_CASE("handshakeMustInterruptOnError: false stops the handshake, true goes on") {
        const TestIdentity& identity = testCertificates().clientExpired;
        SUBCASE("onHandshakeInterruptedOnError returns false: access_denied mid-handshake") {
            TlsServer f(clientAuthConfiguration(VerifyMode::VerifyPeer, true));
            REQUIRE(f.port != 0);
            RawClient client = tcpTo(f.port);
            const std::uint16_t clientPort = localPortOf(client.fd());
            const bool handshook = client.startTls(clientOptions(&identity));
            CHECK_FALSE(handshook);
            expectRefused(client, handshook, accessDenied);
            REQUIRE(f.waitForServerErrors(1));
            f.call([&] {
                INFO("signals: ", join(f.events.log));
                REQUIRE(f.events.interruptions.size() == 1);
                checkClientInfo(f.events.interruptions[0].first, clientPort);
                CHECK(f.events.interruptions[0].second.code == SslError::Code::CertificateExpired);
                CHECK(f.events.sslErrors.empty());
                CHECK(f.events.serverErrors[0] == CloseCode::CloseCodeTlsHandshakeFailed);
                CHECK(hasAlert(f.events.alertsSent, SslAlert::Level::Fatal, accessDenied));
                CHECK(f.events.newConnections == 0);
            });
        }
        SUBCASE("returns true, onSslErrors false: the handshake ends, then the client is refused") {
            TlsServer f(clientAuthConfiguration(VerifyMode::VerifyPeer, true));
            REQUIRE(f.port != 0);
            f.call([&] { f.policy.continueInterrupted = true; });
            RawClient client = tcpTo(f.port);
            const bool handshook = client.startTls(clientOptions(&identity));
            expectRefused(client, handshook, badCertificate);
            REQUIRE(f.waitForServerErrors(1));
            f.call([&] {
                INFO("signals: ", join(f.events.log));
                CHECK(f.events.interruptions.size() == 1);
                CHECK(f.events.sslErrors.size() == 1);
                CHECK(indexOf(f.events.log, "handshakeInterruptedOnError") <
                      indexOf(f.events.log, "sslErrors"));
                CHECK(f.events.newConnections == 0);
            });
        }
        SUBCASE("returns true, onSslErrors true: connected") {
            TlsServer f(clientAuthConfiguration(VerifyMode::VerifyPeer, true));
            REQUIRE(f.port != 0);
            f.call([&] {
                f.policy.continueInterrupted = true;
                f.policy.ignoreSslErrors = true;
            });
            RawClient client = openWss(f.port, clientOptions(&identity));
            REQUIRE(f.waitForSockets(1));
            f.call([&] {
                INFO("signals: ", join(f.events.log));
                CHECK(f.events.interruptions.size() == 1);
                CHECK(f.events.serverErrors.empty());
            });
            CHECK(client.sendText("continued"));
            CHECK(client.expectText("continued"));
        }
    }
}

TEST_SUITE("wss: pre-shared keys") {
    // A pure PSK suite needs no certificate; the ECDHE one adds forward secrecy.
    const std::vector<std::string> pskSuites = {"TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256",
                                                "TLS-PSK-WITH-AES-128-GCM-SHA256"};

    SslConfiguration pskConfiguration() {
        const std::vector<std::string> supported = SslConfiguration::supportedCiphers();
        for (const auto& suite : pskSuites) {
            INFO(suite);
            REQUIRE(std::find(supported.begin(), supported.end(), suite) != supported.end());
        }
        SslConfiguration configuration;
        REQUIRE(configuration.setCiphers(pskSuites));
        return configuration;
    }

    TlsClientOptions pskClient(std::string identity, std::string key) {
        TlsClientOptions options;
        options.pskIdentity = std::move(identity);
        options.psk = std::move(key);
        options.ciphers = pskSuites;
        options.alpn = {"http/1.1"};
        options.serverName = "localhost";
        return options;
    }

    const std::string aliceKey = "sixteen byte key";

    TEST_CASE("the key given for the identity lets the client in") {
        TlsServer f(pskConfiguration());
        REQUIRE(f.port != 0);
        f.call([&] { f.policy.preSharedKeys["alice"] = aliceKey; });
        RawClient client = tcpTo(f.port);
        const std::uint16_t clientPort = localPortOf(client.fd());
        const bool handshook = client.startTls(pskClient("alice", aliceKey));
        INFO("TLS: ", client.tls()->errorString());
        REQUIRE(handshook);
        CHECK(client.tls()->serverCertificateSubject().empty());
        REQUIRE(client.upgrade());
        REQUIRE(f.waitForSockets(1));
        f.call([&] {
            REQUIRE(f.events.pskIdentities.size() == 1);
            checkClientInfo(f.events.pskIdentities[0].first, clientPort);
            CHECK(f.events.pskIdentities[0].second == "alice");
            CHECK(f.sockets[0]->sslCipher() == pskSuites[0]);
            CHECK(f.sockets[0]->sslCipher() == client.tls()->cipher());
        });
        CHECK(client.sendText("pre-shared"));
        CHECK(client.expectText("pre-shared"));
    }

    TEST_CASE("a wrong key fails the handshake") {
        TlsServer f(pskConfiguration());
        REQUIRE(f.port != 0);
        f.call([&] { f.policy.preSharedKeys["alice"] = aliceKey; });
        RawClient client = tcpTo(f.port);
        const bool handshook = client.startTls(pskClient("alice", "not the right key"));
        INFO("TLS: ", client.tls()->errorString());
        CHECK_FALSE(handshook);
        CHECK_FALSE(client.tls()->timedOut());
        REQUIRE(f.waitForServerErrors(1));
        f.call([&] {
            INFO("signals: ", join(f.events.log));
            CHECK(f.events.pskIdentities.size() == 1);
            CHECK(f.events.serverErrors[0] == CloseCode::CloseCodeTlsHandshakeFailed);
            CHECK_FALSE(f.events.alertsSent.empty());
            CHECK(f.events.newConnections == 0);
        });
    }

    TEST_CASE("no key for the identity: unknown_psk_identity and no connection") {
        TlsServer f(pskConfiguration());
        REQUIRE(f.port != 0);
        RawClient client = tcpTo(f.port);
        const std::uint16_t clientPort = localPortOf(client.fd());
        const bool handshook = client.startTls(pskClient("mallory", aliceKey));
        CHECK_FALSE(handshook);
        expectRefused(client, handshook, unknownPskIdentity);
        REQUIRE(f.waitForServerErrors(1));
        f.call([&] {
            INFO("signals: ", join(f.events.log));
            REQUIRE(f.events.pskIdentities.size() == 1);
            CHECK(f.events.pskIdentities[0].second == "mallory");
            REQUIRE(f.events.alertsSent.size() >= 1);
            checkClientInfo(f.events.alertsSent[0].first, clientPort);
            CHECK(hasAlert(f.events.alertsSent, SslAlert::Level::Fatal, unknownPskIdentity));
            CHECK(f.events.serverErrors[0] == CloseCode::CloseCodeTlsHandshakeFailed);
            CHECK(f.events.newConnections == 0);
        });
    }
}

TEST_SUITE("wss: SNI") {
    TEST_CASE("the name asked for is reported even when no SNI certificate is configured") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        RawClient client = openWss(f.port);
        REQUIRE(f.waitForSockets(1));
        f.call([&] { CHECK(f.sockets[0]->sslServerName() == "localhost"); });
    }

    TEST_CASE("each name gets its certificate and sslServerName reports it") {
        const TestCertificates& c = testCertificates();
        SslConfiguration configuration = serverConfiguration();
        REQUIRE(configuration.addSniCertificate("sni.example.com", c.sniServer.certificatePem,
                                                c.sniServer.privateKeyPem));
        REQUIRE(configuration.addSniCertificate("*.example.net", c.wildcardServer.certificatePem,
                                                c.wildcardServer.privateKeyPem));
        TlsServer f(configuration);
        REQUIRE(f.port != 0);
        struct Case {
            std::string asked;
            std::string subject;
            std::string reported;
        };
        const std::vector<Case> cases = {
            {"sni.example.com", c.sniServer.subject, "sni.example.com"},
            {"SNI.Example.COM", c.sniServer.subject, "sni.example.com"},
            {"a.example.net", c.wildcardServer.subject, "a.example.net"},
            {"localhost", c.serverEcdsa.subject, "localhost"},
            {"unknown.example.org", c.serverEcdsa.subject, "unknown.example.org"},
            {"", c.serverEcdsa.subject, ""},
        };
        std::size_t n = 0;
        for (const Case& one : cases) {
            CAPTURE(one.asked);
            TlsClientOptions options = clientOptions();
            options.serverName = one.asked;
            if (one.subject == c.serverEcdsa.subject && !one.asked.empty()) {
                // localhost's certificate does not name the others.
                options.verify = ServerVerify::Optional;
            }
            RawClient client = openWss(f.port, options);
            CHECK(client.tls()->serverCertificateSubject() == one.subject);
            REQUIRE(f.waitForSockets(++n));
            f.call([&] { CHECK(f.sockets[n - 1]->sslServerName() == one.reported); });
            CHECK(client.sendText(one.asked));
            CHECK(client.expectText(one.asked));
        }
    }
}

TEST_SUITE("wss: session resumption") {
    TEST_CASE("a saved session resumes on the same server, not on another") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        std::shared_ptr<const TlsClientSession> saved;
        {
            RawClient first = openWss(f.port);
            CHECK_FALSE(first.tls()->sessionResumed());
            saved = first.tls()->saveSession();
            REQUIRE(saved != nullptr);
            REQUIRE(f.waitForSockets(1));
            f.call([&] { CHECK_FALSE(f.sockets[0]->sslSessionResumed()); });
            CHECK(first.sendClose(1000));
            CHECK(first.expectClose(1000).isClose());
            CHECK(first.expectTcpClosed(serverCloseTimeout).closed);
        }
        TlsClientOptions options = clientOptions();
        options.session = saved;
        RawClient second = openWss(f.port, options);
        CHECK(second.tls()->sessionResumed());
        REQUIRE(f.waitForSockets(2));
        f.call([&] {
            CHECK(f.sockets[1]->sslSessionResumed());
            CHECK(f.sockets[1]->isSecure());
            CHECK(f.sockets[1]->sslCipher() == second.tls()->cipher());
        });
        CHECK(second.sendText("resumed"));
        CHECK(second.expectText("resumed"));

        // Ticket keys belong to one server: another one does a full handshake.
        TlsServer other(serverConfiguration());
        REQUIRE(other.port != 0);
        RawClient third = openWss(other.port, options);
        CHECK_FALSE(third.tls()->sessionResumed());
        REQUIRE(other.waitForSockets(1));
        other.call([&] { CHECK_FALSE(other.sockets[0]->sslSessionResumed()); });
    }

    TEST_CASE("with tickets off nothing resumes") {
        SslConfiguration configuration = serverConfiguration();
        configuration.setSessionTicketsEnabled(false);
        TlsServer f(configuration);
        REQUIRE(f.port != 0);
        std::shared_ptr<const TlsClientSession> saved;
        {
            RawClient first = openWss(f.port);
            saved = first.tls()->saveSession();
        }
        REQUIRE(saved != nullptr);
        TlsClientOptions options = clientOptions();
        options.session = saved;
        RawClient second = openWss(f.port, options);
        CHECK_FALSE(second.tls()->sessionResumed());
        REQUIRE(f.waitForSockets(2));
        f.call([&] { CHECK_FALSE(f.sockets[1]->sslSessionResumed()); });
    }
}

TEST_SUITE("wss: stalled and broken handshakes") {
    TEST_CASE("a client that stalls mid-TLS-handshake is closed at the handshake timeout") {
        TlsServer f(serverConfiguration(), [](Server& s) { s.setHandshakeTimeout(300ms); });
        REQUIRE(f.port != 0);
        const auto start = Clock::now();
        RawClient client = tcpTo(f.port);
        SUBCASE("it sends nothing") {
        }
        SUBCASE("it sends half a ClientHello") {
            // A handshake record announcing 200 bytes, with only its start sent.
            std::string hello = std::string("\x16\x03\x01\x00\xC8\x01\x00\x00\xC4\x03\x03", 11);
            hello += randomBytes(32);
            CHECK(client.send(hello));
        }
        bool eof = false;
        const std::string answer = client.readAll(5s, &eof);
        INFO("closed after ", since(start).count(), " ms; answer: ", hex(answer));
        CHECK(eof);
        CHECK(since(start) >= 250ms);
        CHECK(since(start) < 2s);
        // No HTTP 408 in the clear to a client that has not finished TLS:
        // nothing, or a TLS alert record.
        CHECK((answer.empty() || answer[0] == '\x15'));
        REQUIRE(f.waitForServerErrors(1));
        f.call([&] {
            CHECK(f.events.serverErrors.size() == 1);
            CHECK(f.events.serverErrors[0] == CloseCode::CloseCodeAbnormalDisconnection);
            CHECK(f.events.newConnections == 0);
        });
    }

    TEST_CASE("a client that stalls after TLS, mid-request, gets 408 over TLS") {
        TlsServer f(serverConfiguration(), [](Server& s) { s.setHandshakeTimeout(500ms); });
        REQUIRE(f.port != 0);
        const auto start = Clock::now();
        RawClient client = tcpTo(f.port);
        REQUIRE(client.startTls(clientOptions()));
        CHECK(client.send("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
        const HttpResponse response = client.readResponse(5s);
        INFO("after ", since(start).count(), " ms: ", response.describe());
        CHECK(response.status == 408);
        CHECK(since(start) >= 450ms);
        CHECK(since(start) < 3s);
        CHECK(client.readUntilClosed(serverCloseTimeout).closed);
        REQUIRE(f.waitForServerErrors(1));
        f.call(
            [&] { CHECK(f.events.serverErrors[0] == CloseCode::CloseCodeAbnormalDisconnection); });
    }

    TEST_CASE("200 idle TCP connections do not delay a real wss client") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        std::vector<RawClient> idle(200);
        for (auto& c : idle) {
            REQUIRE(c.connectPlain(f.port));
        }
        // Let the server accept them all before the measured client comes.
        std::this_thread::sleep_for(100ms);
        const auto start = Clock::now();
        RawClient client = openWss(f.port);
        CHECK(client.sendText("not delayed"));
        CHECK(client.expectText("not delayed"));
        const auto elapsed = since(start);
        MESSAGE("TLS and WebSocket handshakes plus one echo beside 200 idle connections: ",
                elapsed.count(), " ms");
        CHECK(elapsed < 1s);
        for (auto& c : idle) {
            CHECK(c.quietFor(0ms));
        }
        idle.clear();
    }

    TEST_CASE("garbage and plain HTTP on the wss port are dropped, others still served") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        std::string bytes;
        SUBCASE("garbage") {
            bytes = std::string("\x00\x01\x02\x03 garbage, not TLS", 22) + randomBytes(200);
        }
        SUBCASE("a plain HTTP upgrade request") {
            bytes = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n";
        }
        SUBCASE("a TLS record of a type that does not exist") {
            bytes = std::string("\x42\x03\x03\x00\x05hello", 10);
        }
        RawClient client = tcpTo(f.port);
        CHECK(client.send(bytes));
        bool eof = false;
        const std::string answer = client.readAll(3s, &eof);
        INFO("answer: ", hex(answer));
        CHECK(eof);
        CHECK_FALSE(answer.rfind("HTTP/", 0) == 0);
        CHECK((answer.empty() || answer[0] == '\x15'));
        REQUIRE(f.waitForServerErrors(1));
        f.call([&] {
            INFO("signals: ", join(f.events.log));
            CHECK(f.events.serverErrors[0] == CloseCode::CloseCodeTlsHandshakeFailed);
        });
        RawClient good = openWss(f.port);
        CHECK(good.sendText("still here"));
        CHECK(good.expectText("still here"));
    }
}

TEST_SUITE("wss: alerts") {
    TEST_CASE("a client's fatal alert in the clear, mid-handshake, is received") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        RawClient tcp = tcpTo(f.port);
        const std::uint16_t clientPort = localPortOf(tcp.fd());
        TlsClient tls;
        REQUIRE(tls.setup(tcp.fd(), clientOptions()));
        REQUIRE(tls.handshakeUntil(TlsClient::Step::ServerHelloDone));
        CHECK(tls.sendAlert(alertFatal, handshakeFailure));
        std::string plaintext;
        CHECK(tls.receive(plaintext, Clock::now() + 3s) == ClientTransport::Status::Eof);
        REQUIRE(f.waitForServerErrors(1));
        f.call([&] {
            INFO("signals: ", join(f.events.log));
            REQUIRE(f.events.alertsReceived.size() == 1);
            checkClientInfo(f.events.alertsReceived[0].first, clientPort);
            CHECK(f.events.alertsReceived[0].second.level == SslAlert::Level::Fatal);
            CHECK(int(f.events.alertsReceived[0].second.type) == int(handshakeFailure));
            CHECK(f.events.alertsReceived[0].second.description() == "handshake_failure");
            CHECK(indexOf(f.events.log, "alertReceived") < indexOf(f.events.log, "serverError"));
            CHECK(f.events.serverErrors[0] == CloseCode::CloseCodeTlsHandshakeFailed);
        });
    }

    TEST_CASE("a client's fatal alert, encrypted after the handshake, is received") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        RawClient client = tcpTo(f.port);
        const std::uint16_t clientPort = localPortOf(client.fd());
        REQUIRE(client.startTls(clientOptions()));
        CHECK(client.tls()->sendAlert(alertFatal, badCertificate));
        bool eof = false;
        client.readAll(3s, &eof);
        CHECK(eof);
        REQUIRE(f.waitFor([&] { return !f.events.alertsReceived.empty(); }));
        f.call([&] {
            INFO("signals: ", join(f.events.log));
            REQUIRE(f.events.alertsReceived.size() == 1);
            checkClientInfo(f.events.alertsReceived[0].first, clientPort);
            CHECK(f.events.alertsReceived[0].second.level == SslAlert::Level::Fatal);
            CHECK(int(f.events.alertsReceived[0].second.type) == int(badCertificate));
            CHECK(f.events.newConnections == 0);
        });
    }

    TEST_CASE("a client's close_notify before its request is received") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        RawClient client = tcpTo(f.port);
        REQUIRE(client.startTls(clientOptions()));
        CHECK(client.tls()->sendCloseNotify());
        bool eof = false;
        client.readAll(3s, &eof);
        CHECK(eof);
        REQUIRE(f.waitFor([&] { return !f.events.alertsReceived.empty(); }));
        f.call([&] {
            INFO("signals: ", join(f.events.log));
            CHECK(f.events.alertsReceived[0].second.level == SslAlert::Level::Warning);
            CHECK(int(f.events.alertsReceived[0].second.type) == int(closeNotify));
            CHECK(f.events.newConnections == 0);
        });
    }

    TEST_CASE("a record that fails to decrypt: the server's encrypted alert is reported") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        RawClient client = tcpTo(f.port);
        REQUIRE(client.startTls(clientOptions()));
        // Application data that no key made: an AEAD suite's tag cannot match.
        CHECK(client.tls()->sendRaw(std::string("\x17\x03\x03\x00\x28", 5) + randomBytes(40)));
        bool eof = false;
        client.readAll(3s, &eof);
        CHECK(eof);
        // The client decrypts what the server could only report as "an alert".
        REQUIRE(client.tls()->alertReceived().has_value());
        CHECK(int(client.tls()->alertReceived()->description) == 20); // bad_record_mac
        REQUIRE(f.waitFor([&] { return !f.events.alertsSent.empty(); }));
        f.call([&] {
            INFO("signals: ", join(f.events.log));
            // docs/tls.md: mbedTLS encrypts its own alerts in place, so their
            // level and description are unknown (255).
            CHECK(f.events.alertsSent[0].second.level == SslAlert::Level::Unknown);
            CHECK(int(f.events.alertsSent[0].second.type) == 255);
            CHECK(f.events.newConnections == 0);
        });
    }

    TEST_CASE("the server's own alert on a failed handshake is sent and reported") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        TlsClientOptions options = clientOptions();
        std::uint8_t expected = 0;
        SUBCASE("no ALPN protocol in common: no_application_protocol") {
            options.alpn = {"h2"};
            expected = noApplicationProtocol;
        }
        SUBCASE("no cipher suite in common: handshake_failure") {
            // The server's certificate is ECDSA: its RSA suites cannot be used.
            options.ciphers = {"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"};
            expected = handshakeFailure;
        }
        RawClient client = tcpTo(f.port);
        const std::uint16_t clientPort = localPortOf(client.fd());
        const bool handshook = client.startTls(options);
        CHECK_FALSE(handshook);
        expectRefused(client, handshook, expected);
        REQUIRE(f.waitForServerErrors(1));
        f.call([&] {
            INFO("signals: ", join(f.events.log));
            REQUIRE(f.events.alertsSent.size() == 1);
            checkClientInfo(f.events.alertsSent[0].first, clientPort);
            CHECK(f.events.alertsSent[0].second.level == SslAlert::Level::Fatal);
            CHECK(int(f.events.alertsSent[0].second.type) == int(expected));
            CHECK(indexOf(f.events.log, "alertSent") < indexOf(f.events.log, "serverError"));
            CHECK(f.events.serverErrors[0] == CloseCode::CloseCodeTlsHandshakeFailed);
        });
    }
}

TEST_SUITE("wss: closing") {
    TEST_CASE("the client's close 1000 comes back, then close_notify and EOF") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        RawClient client = openWss(f.port);
        REQUIRE(f.waitForSockets(1));
        CHECK(client.sendClose(1000, "bye"));
        CHECK(client.expectClose(1000).isClose());
        const TcpCloseResult rest = client.expectTcpClosed(serverCloseTimeout);
        CHECK(rest.frames.empty());
        CHECK_FALSE(rest.reset);
        CHECK(client.tls()->closeNotifyReceived());
        CHECK_MESSAGE(client.tls()->bytesAfterCloseNotify().empty(),
                      "after close_notify: ", hex(client.tls()->bytesAfterCloseNotify()));
        REQUIRE(f.waitFor([&] { return !f.sockets[0]->isValid(); }));
        f.call([&] { CHECK(f.sockets[0]->closeCode() == CloseCode::CloseCodeNormal); });
    }

    TEST_CASE("the server's close(): the client answers, then close_notify and EOF") {
        TlsServer f(serverConfiguration());
        REQUIRE(f.port != 0);
        RawClient client = openWss(f.port);
        REQUIRE(f.waitForSockets(1));
        f.call([&] { f.sockets[0]->close(CloseCode::CloseCodeGoingAway, "going"); });
        const ReceivedFrame close = client.expectClose(1001);
        CHECK(close.closeReason() == "going");
        CHECK(client.sendClose(1001));
        const TcpCloseResult rest = client.expectTcpClosed(serverCloseTimeout);
        CHECK(rest.frames.empty());
        CHECK(client.tls()->closeNotifyReceived());
        CHECK(client.tls()->bytesAfterCloseNotify().empty());
    }
}

TEST_SUITE("wss: clients that hang up") {
    // A write(2) to a peer that has gone raises SIGPIPE unless the program
    // ignores it; the library sends with MSG_NOSIGNAL instead. Over TLS a close is two writes
    // (the record with the close frame, then close_notify), so the second
    // meets the peer's RST. A library must not kill its host program then.
    TEST_CASE("a client that sends close and hangs up at once does not SIGPIPE the server") {
        const int status = runInChild(
            [] {
                TlsServer f(serverConfiguration());
                RawClient client = openWss(f.port);
                if (!f.waitForSockets(1)) {
                    return false;
                }
                // The server reads the close only once the client has gone.
                f.call([&] { f.sockets[0]->pauseReading(); });
                client.sendClose(1000);
                client.close();
                std::this_thread::sleep_for(50ms);
                // The server answers the close, then sends close_notify.
                f.call([&] { f.sockets[0]->resumeReading(); });
                return f.waitFor([&] { return !f.sockets[0]->isValid(); });
            },
            20s);
        INFO("the child: ", describeStatus(status));
        CHECK_FALSE(killedBySigpipe(status));
        CHECK(status == 0);
    }

    TEST_CASE("a pending client that has gone does not SIGPIPE Server::close()") {
        const int status = runInChild(
            [] {
                TlsServer f(serverConfiguration());
                f.call([&] { f.policy.takeConnections = false; });
                {
                    RawClient client = openWss(f.port);
                    if (!f.waitFor([&] { return f.events.newConnections == 1; })) {
                        return false;
                    }
                }
                std::this_thread::sleep_for(50ms);
                // Close 1001 to the pending connection, then close_notify.
                f.call([&] { f.server->close(); });
                std::this_thread::sleep_for(100ms);
                return true;
            },
            20s);
        INFO("the child: ", describeStatus(status));
        CHECK_FALSE(killedBySigpipe(status));
        CHECK(status == 0);
    }
}

namespace {

/// The path of `name` on PATH, empty when it is not there.
std::string findOnPath(const std::string& name) {
    const char* path = std::getenv("PATH");
    std::string_view rest = path != nullptr ? path : "/usr/bin:/bin";
    while (!rest.empty()) {
        const auto colon = rest.find(':');
        const std::string candidate = std::string(rest.substr(0, colon)) + "/" + name;
        if (::access(candidate.c_str(), X_OK) == 0) {
            return candidate;
        }
        rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    }
    return {};
}

/// A child process fed through its stdin and read through its stdout;
/// stderr goes to a file. Every wait is bounded; the destructor kills it if
/// it is still running.
class ChildProcess {
public:
    ChildProcess(std::vector<std::string> args, const std::string& stderrPath) {
        std::vector<char*> argv;
        for (auto& a : args) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        int in[2];
        int out[2];
        REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
        REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
        const int err = ::open(stderrPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        REQUIRE(err >= 0);
        const pid_t parent = ::getpid();
        pid_ = ::fork();
        if (pid_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (::getppid() != parent) {
                ::_exit(126);
            }
            ::dup2(in[0], STDIN_FILENO);
            ::dup2(out[1], STDOUT_FILENO);
            ::dup2(err, STDERR_FILENO);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::close(in[0]);
        ::close(out[1]);
        ::close(err);
        stdin_ = in[1];
        stdout_ = out[0];
        REQUIRE(pid_ > 0);
        ::fcntl(stdin_, F_SETFL, O_NONBLOCK);
        ::fcntl(stdout_, F_SETFL, O_NONBLOCK);
    }
    ~ChildProcess() {
        if (stdin_ >= 0) {
            ::close(stdin_);
        }
        if (stdout_ >= 0) {
            ::close(stdout_);
        }
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;

    bool write(std::string_view bytes, std::chrono::milliseconds timeout = 5s) {
        const auto deadline = Clock::now() + timeout;
        while (!bytes.empty()) {
            const ssize_t n = ::write(stdin_, bytes.data(), bytes.size());
            if (n > 0) {
                bytes.remove_prefix(static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && errno != EAGAIN && errno != EINTR) {
                return false;
            }
            pollfd p{stdin_, POLLOUT, 0};
            if (Clock::now() >= deadline || ::poll(&p, 1, 50) < 0) {
                return false;
            }
        }
        return true;
    }

    /// Reads stdout into `out` until `done(out)`, EOF or the timeout. True
    /// when done.
    bool readUntil(std::string& out, const std::function<bool(const std::string&)>& done,
                   std::chrono::milliseconds timeout, bool* eof = nullptr) {
        const auto deadline = Clock::now() + timeout;
        for (;;) {
            if (done(out)) {
                return true;
            }
            char chunk[4096];
            const ssize_t n = ::read(stdout_, chunk, sizeof chunk);
            if (n > 0) {
                out.append(chunk, static_cast<std::size_t>(n));
                continue;
            }
            if (n == 0) {
                if (eof != nullptr) {
                    *eof = true;
                }
                return done(out);
            }
            if (errno != EAGAIN && errno != EINTR) {
                return false;
            }
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0) {
                return false;
            }
            pollfd p{stdout_, POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(left.count()) + 1);
        }
    }

    /// The exit status once it exits within `timeout`, else nullopt.
    std::optional<int> wait(std::chrono::milliseconds timeout) {
        const auto deadline = Clock::now() + timeout;
        for (;;) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1;
                return status;
            }
            if (Clock::now() >= deadline) {
                return std::nullopt;
            }
            std::this_thread::sleep_for(10ms);
        }
    }

private:
    pid_t pid_ = -1;
    int stdin_ = -1;
    int stdout_ = -1;
};

std::string readTextFile(const std::string& path) {
    std::string out;
    if (FILE* file = std::fopen(path.c_str(), "rb")) {
        char chunk[4096];
        std::size_t n = 0;
        while ((n = std::fread(chunk, 1, sizeof chunk, file)) > 0) {
            out.append(chunk, n);
        }
        std::fclose(file);
    }
    return out;
}

} // namespace

/// The echo-server process over wss://, and the command of an openssl
/// s_client that connects to it and verifies it.
struct OutsideClientSetup {
    const std::string openssl = findOnPath("openssl");
    const TestCertificateFiles& files = testCertificateFiles();
    EchoServerProcess server{{"--cert", files.certificate, "--key", files.key, "--quiet"}};

    std::vector<std::string> command(std::vector<std::string> options) const {
        std::vector<std::string> out = {openssl,
                                        "s_client",
                                        "-connect",
                                        "127.0.0.1:" + std::to_string(server.port()),
                                        "-servername",
                                        "localhost",
                                        "-CAfile",
                                        files.ca,
                                        "-verify_return_error"};
        out.insert(out.end(), options.begin(), options.end());
        return out;
    }
};

TEST_SUITE("wss: an outside client") {
    TEST_CASE("openssl s_client gets 101 and its text frame echoed") {
        OutsideClientSetup setup;
        if (setup.openssl.empty()) {
            MESSAGE("the openssl command is not installed; skipped");
            return;
        }
        auto& server = setup.server;
        REQUIRE(server.started());
        const std::string stderrPath = writeTestFile("s_client.stderr", "");
        ChildProcess client(setup.command({"-quiet", "-nocommands", "-alpn", "http/1.1"}),
                            stderrPath);
        const std::string key = randomKey();
        const std::string message = "hello from openssl s_client";
        HttpRequest request;
        request.add("Host", "127.0.0.1:" + std::to_string(server.port()));
        request.add("Upgrade", "websocket");
        request.add("Connection", "Upgrade");
        request.add("Sec-WebSocket-Key", key);
        request.add("Sec-WebSocket-Version", "13");
        CHECK(client.write(request.serialize() + frame(opcode::text, message)));

        // The 101's head, then one unmasked text frame with a 7-bit length.
        std::string out;
        const auto complete = [](const std::string& bytes) {
            const auto end = bytes.find("\r\n\r\n");
            if (end == std::string::npos || bytes.size() < end + 6) {
                return false;
            }
            const auto length = static_cast<std::uint8_t>(bytes[end + 5]) & 0x7F;
            return bytes.size() >= end + 6 + length;
        };
        const bool got = client.readUntil(out, complete, 10s);
        INFO("stdout: ", out.substr(0, 400), "\nstderr: ", readTextFile(stderrPath));
        REQUIRE(got);
        const auto end = out.find("\r\n\r\n");
        const std::string head = out.substr(0, end);
        CHECK(head.rfind("HTTP/1.1 101 ", 0) == 0);
        const std::string acceptLine =
            "\r\nSec-WebSocket-Accept: " + expectedAcceptKey(key) + "\r\n";
        CHECK((head + "\r\n").find(acceptLine) != std::string::npos);
        const std::string echoed = out.substr(end + 4);
        CHECK(static_cast<std::uint8_t>(echoed[0]) == 0x81);
        CHECK(static_cast<std::uint8_t>(echoed[1]) == message.size());
        CHECK(echoed.substr(2) == message);

        // A close frame ends it: close 1000 back, then the server closes.
        CHECK(client.write(frame(opcode::close, closePayload(1000))));
        std::string rest;
        bool eof = false;
        client.readUntil(
            rest, [](const std::string&) { return false; }, 5s, &eof);
        CHECK(eof);
        CHECK(rest.substr(0, 4) == closePayload(1000).insert(0, "\x88\x02", 2));
        const std::optional<int> status = client.wait(5s);
        REQUIRE(status.has_value());
        CHECK(WIFEXITED(*status));
    }

    TEST_CASE("openssl s_client offering P-521 first gets x25519, the cheapest") {
        OutsideClientSetup setup;
        if (setup.openssl.empty()) {
            MESSAGE("the openssl command is not installed; skipped");
            return;
        }
        REQUIRE(setup.server.started());
        const std::string stderrPath = writeTestFile("s_client-groups.stderr", "");
        // Firefox offers these four too. mbedTLS alone would answer P-521.
        ChildProcess client(setup.command({"-groups", "P-521:P-384:P-256:X25519"}), stderrPath);
        std::string out;
        const auto keyLine = [](const std::string& bytes) {
            const auto at = bytes.find("Server Temp Key:");
            return at != std::string::npos && bytes.find('\n', at) != std::string::npos;
        };
        const bool got = client.readUntil(out, keyLine, 10s);
        INFO("stdout: ", out.substr(0, 2000), "\nstderr: ", readTextFile(stderrPath));
        REQUIRE(got);
        const auto at = out.find("Server Temp Key:");
        CHECK(out.substr(at, out.find('\n', at) - at) == "Server Temp Key: X25519, 253 bits");
    }
}
