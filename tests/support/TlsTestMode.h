// The core integration suites run twice: over ws:// and, with the
// environment variable WSGATE_TEST_TLS=1, over wss://. These say which, and
// give both sides what they need for TLS.
#pragma once

#include "support/TlsClient.h"
#include "wsgate/Server.h"
#include "wsgate/SslConfiguration.h"

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace wsgate::test {

/// True when WSGATE_TEST_TLS is 1: RawClient then speaks TLS after every
/// connect(), echo-server gets --cert/--key, in-process servers SecureMode.
bool tlsTestMode();
/// "wss" under TLS, "ws" otherwise.
const char* testScheme();
/// SecureMode under TLS, NonSecureMode otherwise.
Server::SslMode testSslMode();
/// What in-process servers are given under TLS: the test CA's ECDSA
/// certificate for localhost and its key.
SslConfiguration testServerSslConfiguration();
/// Makes `server` serve the mode under test: under TLS it gets
/// testServerSslConfiguration() (CHECKed to be accepted), otherwise nothing.
bool configureForTestMode(Server& server);
/// What RawClient offers under TLS: TLS 1.2 verifying the server against the
/// test CA as "localhost", SNI localhost, ALPN http/1.1.
TlsClientOptions defaultTlsClientOptions();

/// The session of the last connection RawClient::connect() made to `port`
/// under TLS, null when none. Later connections offer it, as browsers do:
/// the first connection to a server is a full handshake, the others resume
/// (a server on a reused port refuses the ticket and does a full one).
/// Thread-safe.
std::shared_ptr<const TlsClientSession> testSessionFor(std::uint16_t port);
void rememberTestSession(std::uint16_t port, std::shared_ptr<const TlsClientSession> session);

/// Files in a directory of this process's own, removed when it exits.
/// writeTestFile("server.pem", pem) returns the file's path.
std::string writeTestFile(std::string_view name, std::string_view content);

/// The server certificate, key and CA of the test certificates as files,
/// written once per process (for echo-server's --cert/--key/--client-ca).
struct TestCertificateFiles {
    std::string certificate;
    std::string key;
    std::string ca;
};
const TestCertificateFiles& testCertificateFiles();

} // namespace wsgate::test
