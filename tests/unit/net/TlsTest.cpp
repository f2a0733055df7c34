// TlsSession and TlsContext over real TLS 1.2 in memory: an mbedTLS client
// in the test talks to a TlsSession through byte vectors, no sockets, with
// certificates made at test time.
#include "net/TlsContext.h"
#include "net/TlsSession.h"
#include "support/TestCertificates.h"
#include "wsgate/SslConfiguration.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <doctest/doctest.h>
#include <malloc.h>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

// unit_tests does not link wsgate_test_support (tests/CMakeLists.txt), so
// the certificate helper is compiled in here until it does.

#if defined(__SANITIZE_ADDRESS__)
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace {

using wsgate::SslConfiguration;
using wsgate::net::TlsAlert;
using wsgate::net::TlsContext;
using wsgate::net::TlsPreSharedKeyAuthenticator;
using wsgate::net::TlsSession;
using wsgate::net::TlsVerifyError;
using wsgate::test::testCertificates;
using wsgate::test::TestIdentity;
using Bytes = std::vector<std::uint8_t>;
using VerifyCode = TlsVerifyError::Code;

// Bytes on the heap now: ASan's count under the sanitizers, glibc's
// otherwise.
std::size_t heapInUse() {
#if defined(__SANITIZE_ADDRESS__)
    return __sanitizer_get_current_allocated_bytes();
#else
    return mallinfo2().uordblks;
#endif
}

Bytes bytesOf(std::string_view text) {
    return Bytes(text.begin(), text.end());
}

Bytes pattern(std::size_t size) {
    Bytes out(size);
    for (std::size_t i = 0; i < size; ++i) {
        out[i] = static_cast<std::uint8_t>((i * 131) ^ (i >> 8));
    }
    return out;
}

int drbg(void* state, unsigned char* out, std::size_t size) {
    return mbedtls_ctr_drbg_random(state, out, size);
}

mbedtls_ctr_drbg_context& testRandom() {
    struct Random {
        Random() {
            mbedtls_entropy_init(&entropy);
            mbedtls_ctr_drbg_init(&drbg);
            REQUIRE(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, nullptr, 0) == 0);
        }
        ~Random() {
            mbedtls_ctr_drbg_free(&drbg);
            mbedtls_entropy_free(&entropy);
        }
        mbedtls_entropy_context entropy;
        mbedtls_ctr_drbg_context drbg;
    };
    static Random random;
    return random.drbg;
}

SslConfiguration serverConfiguration(const TestIdentity& identity) {
    SslConfiguration configuration;
    REQUIRE(configuration.setLocalCertificateChain(identity.certificatePem));
    REQUIRE(configuration.setPrivateKey(identity.privateKeyPem));
    return configuration;
}

std::unique_ptr<TlsContext> makeContext(const SslConfiguration& configuration) {
    std::string error;
    auto context = TlsContext::create(configuration, error);
    INFO(error);
    REQUIRE(context != nullptr);
    CHECK(error.empty());
    return context;
}

std::string contextError(const SslConfiguration& configuration) {
    std::string error;
    auto context = TlsContext::create(configuration, error);
    CHECK(context == nullptr);
    return error;
}

struct ClientOptions {
    std::string trustPem = testCertificates().caPem;
    const TestIdentity* identity = nullptr;
    std::vector<std::string> alpn;
    std::string serverName;
    std::vector<std::string> ciphers;
    std::vector<std::string> curves; // mbedTLS names; empty: its defaults
    std::string pskIdentity;
    Bytes psk;
    const mbedtls_ssl_session* resume = nullptr;
    bool requireTrustedServer = false;
    bool allowRenegotiation = false;
};

// The peer: mbedTLS's client, reading and writing byte vectors.
class TestClient {
public:
    explicit TestClient(const ClientOptions& options) {
        mbedtls_ssl_config_init(&config_);
        mbedtls_ssl_init(&ssl_);
        mbedtls_x509_crt_init(&trust_);
        mbedtls_x509_crt_init(&ownChain_);
        mbedtls_pk_init(&ownKey_);
        REQUIRE(mbedtls_ssl_config_defaults(&config_, MBEDTLS_SSL_IS_CLIENT,
                                            MBEDTLS_SSL_TRANSPORT_STREAM,
                                            MBEDTLS_SSL_PRESET_DEFAULT) == 0);
        mbedtls_ssl_conf_rng(&config_, drbg, &testRandom());
        mbedtls_ssl_conf_min_version(&config_, 3, 3);
        // Optional unless asked, so that the tests can look at the server
        // certificate even when it does not match the name asked for.
        mbedtls_ssl_conf_authmode(&config_, options.requireTrustedServer
                                                ? MBEDTLS_SSL_VERIFY_REQUIRED
                                                : MBEDTLS_SSL_VERIFY_OPTIONAL);
        if (!options.trustPem.empty()) {
            REQUIRE(mbedtls_x509_crt_parse(
                        &trust_, reinterpret_cast<const unsigned char*>(options.trustPem.c_str()),
                        options.trustPem.size() + 1) == 0);
            mbedtls_ssl_conf_ca_chain(&config_, &trust_, nullptr);
        }
        if (options.identity != nullptr) {
            const std::string& chain = options.identity->certificatePem;
            const std::string& key = options.identity->privateKeyPem;
            REQUIRE(mbedtls_x509_crt_parse(&ownChain_,
                                           reinterpret_cast<const unsigned char*>(chain.c_str()),
                                           chain.size() + 1) == 0);
            REQUIRE(mbedtls_pk_parse_key(&ownKey_,
                                         reinterpret_cast<const unsigned char*>(key.c_str()),
                                         key.size() + 1, nullptr, 0) == 0);
            REQUIRE(mbedtls_ssl_conf_own_cert(&config_, &ownChain_, &ownKey_) == 0);
        }
        for (const std::string& name : options.curves) {
            const mbedtls_ecp_curve_info* curve = mbedtls_ecp_curve_info_from_name(name.c_str());
            REQUIRE(curve != nullptr);
            curves_.push_back(curve->grp_id);
        }
        if (!curves_.empty()) {
            curves_.push_back(MBEDTLS_ECP_DP_NONE);
            mbedtls_ssl_conf_curves(&config_, curves_.data());
        }
        for (const std::string& name : options.alpn) {
            alpnNames_.push_back(name);
        }
        for (const std::string& name : alpnNames_) {
            alpn_.push_back(name.c_str());
        }
        if (!alpn_.empty()) {
            alpn_.push_back(nullptr);
            REQUIRE(mbedtls_ssl_conf_alpn_protocols(&config_, alpn_.data()) == 0);
        }
        for (const std::string& name : options.ciphers) {
            const int id = mbedtls_ssl_get_ciphersuite_id(name.c_str());
            REQUIRE(id != 0);
            ciphers_.push_back(id);
        }
        if (!ciphers_.empty()) {
            ciphers_.push_back(0);
            mbedtls_ssl_conf_ciphersuites(&config_, ciphers_.data());
        }
        if (!options.psk.empty()) {
            REQUIRE(mbedtls_ssl_conf_psk(
                        &config_, options.psk.data(), options.psk.size(),
                        reinterpret_cast<const unsigned char*>(options.pskIdentity.data()),
                        options.pskIdentity.size()) == 0);
        }
        if (options.allowRenegotiation) {
            mbedtls_ssl_conf_renegotiation(&config_, MBEDTLS_SSL_RENEGOTIATION_ENABLED);
        }
        REQUIRE(mbedtls_ssl_setup(&ssl_, &config_) == 0);
        if (!options.serverName.empty()) {
            REQUIRE(mbedtls_ssl_set_hostname(&ssl_, options.serverName.c_str()) == 0);
        }
        if (options.resume != nullptr) {
            REQUIRE(mbedtls_ssl_set_session(&ssl_, options.resume) == 0);
        }
        mbedtls_ssl_set_bio(&ssl_, this, &TestClient::bioSend, &TestClient::bioReceive, nullptr);
    }
    ~TestClient() {
        mbedtls_ssl_free(&ssl_);
        mbedtls_ssl_config_free(&config_);
        mbedtls_x509_crt_free(&trust_);
        mbedtls_x509_crt_free(&ownChain_);
        mbedtls_pk_free(&ownKey_);
    }
    TestClient(const TestClient&) = delete;
    TestClient& operator=(const TestClient&) = delete;

    // One step of the handshake; 0 when done.
    int handshake() {
        if (done_) {
            return 0;
        }
        const int rc = mbedtls_ssl_handshake(&ssl_);
        if (rc == 0) {
            done_ = true;
        } else if (rc != MBEDTLS_ERR_SSL_WANT_READ) {
            error_ = rc;
        }
        return rc;
    }
    bool done() const { return done_; }
    int error() const { return error_; }

    void write(const Bytes& data) {
        std::size_t offset = 0;
        while (offset < data.size()) {
            const int rc = mbedtls_ssl_write(&ssl_, data.data() + offset, data.size() - offset);
            REQUIRE(rc > 0);
            offset += static_cast<std::size_t>(rc);
        }
    }
    // Everything readable now; `status` gets the last mbedTLS result.
    Bytes read(int* status = nullptr) {
        Bytes out;
        unsigned char buffer[4096];
        int rc = 0;
        while ((rc = mbedtls_ssl_read(&ssl_, buffer, sizeof buffer)) > 0) {
            out.insert(out.end(), buffer, buffer + rc);
        }
        if (status != nullptr) {
            *status = rc;
        }
        return out;
    }

    mbedtls_ssl_context& ssl() { return ssl_; }
    Bytes takeOutput() { return std::exchange(output_, Bytes()); }
    void give(const std::uint8_t* data, std::size_t size) {
        input_.insert(input_.end(), data, data + size);
    }
    std::string peerSubject() {
        const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&ssl_);
        return peer != nullptr ? wsgate::net::distinguishedName(peer->subject) : std::string();
    }

private:
    static int bioSend(void* self, const unsigned char* data, std::size_t size) {
        auto* client = static_cast<TestClient*>(self);
        client->output_.insert(client->output_.end(), data, data + size);
        return static_cast<int>(size);
    }
    static int bioReceive(void* self, unsigned char* data, std::size_t size) {
        auto* client = static_cast<TestClient*>(self);
        const std::size_t left = client->input_.size() - client->inputRead_;
        if (left == 0) {
            return MBEDTLS_ERR_SSL_WANT_READ;
        }
        const std::size_t take = std::min(size, left);
        std::memcpy(data, client->input_.data() + client->inputRead_, take);
        client->inputRead_ += take;
        return static_cast<int>(take);
    }

    mbedtls_ssl_config config_;
    mbedtls_ssl_context ssl_;
    mbedtls_x509_crt trust_;
    mbedtls_x509_crt ownChain_;
    mbedtls_pk_context ownKey_;
    std::vector<std::string> alpnNames_;
    std::vector<const char*> alpn_;
    std::vector<int> ciphers_;
    std::vector<mbedtls_ecp_group_id> curves_;
    Bytes output_;
    Bytes input_;
    std::size_t inputRead_ = 0;
    bool done_ = false;
    int error_ = 0;
};

// Records what the session reports, and acts as a test tells it to.
struct Events : TlsSession::Handler {
    void onTlsHandshakeDone() override { ++handshakeDone; }
    void onTlsPlaintext(std::uint8_t* data, std::size_t size) override {
        ++plaintextCalls;
        plaintext.insert(plaintext.end(), data, data + size);
        if (echo && session != nullptr) {
            CHECK(session->send(data, size));
        }
        if (destroyOnPlaintext && owner != nullptr) {
            owner->reset();
        }
    }
    void onTlsOutput(const std::uint8_t* data, std::size_t size) override {
        ++outputCalls;
        outputSizes.push_back(size);
        output.insert(output.end(), data, data + size);
    }
    void onTlsError(int mbedtlsError, bool duringHandshake) override {
        errors.emplace_back(mbedtlsError, duringHandshake);
    }
    void onTlsCloseNotify() override { ++closeNotify; }
    void onTlsPeerVerifyError(const TlsVerifyError& error) override {
        peerVerifyErrors.push_back(error);
    }
    bool onTlsHandshakeInterruptedOnError(const TlsVerifyError& error) override {
        interruptions.push_back(error);
        return continueAfterInterrupt;
    }
    bool onTlsSslErrors(const std::vector<TlsVerifyError>& list) override {
        sslErrors.push_back(list);
        return ignoreSslErrors;
    }
    void onTlsPreSharedKeyAuthenticationRequired(TlsPreSharedKeyAuthenticator& a) override {
        pskIdentities.emplace_back(a.identity);
        pskHints.emplace_back(a.identityHint);
        auto found = pskKeys.find(std::string(a.identity));
        if (found != pskKeys.end()) {
            a.preSharedKey = found->second;
        }
    }
    void onTlsAlertReceived(TlsAlert alert) override { alertsReceived.push_back(alert); }
    void onTlsAlertSent(TlsAlert alert) override { alertsSent.push_back(alert); }

    bool hasError() const { return !errors.empty(); }

    TlsSession* session = nullptr;
    std::unique_ptr<TlsSession>* owner = nullptr;
    bool echo = false;
    bool destroyOnPlaintext = false;
    bool ignoreSslErrors = false;
    bool continueAfterInterrupt = false;
    std::map<std::string, Bytes> pskKeys;

    int handshakeDone = 0;
    int plaintextCalls = 0;
    int outputCalls = 0;
    int closeNotify = 0;
    Bytes plaintext;
    Bytes output;
    std::vector<std::size_t> outputSizes;
    std::vector<std::pair<int, bool>> errors;
    std::vector<TlsVerifyError> peerVerifyErrors;
    std::vector<TlsVerifyError> interruptions;
    std::vector<std::vector<TlsVerifyError>> sslErrors;
    std::vector<std::string> pskIdentities;
    std::vector<std::string> pskHints;
    std::vector<TlsAlert> alertsReceived;
    std::vector<TlsAlert> alertsSent;
};

// A TlsSession and a client joined by memory. `chunk` splits what the
// server receives: 0 passes each flight whole, 1 a byte at a time.
struct Link {
    Link(TlsContext& context, const ClientOptions& options, std::size_t chunkSize = 0)
        : client(options), chunk(chunkSize) {
        session = std::make_unique<TlsSession>(context, events);
        events.session = session.get();
        events.owner = &session;
    }

    void toServer() {
        const Bytes bytes = client.takeOutput();
        std::size_t step = chunk == 0 ? bytes.size() : chunk;
        for (std::size_t i = 0; i < bytes.size() && session; i += step) {
            session->receive(bytes.data() + i, std::min(step, bytes.size() - i));
        }
    }
    void toClient() {
        client.give(events.output.data(), events.output.size());
        events.output.clear();
    }
    // Runs the handshake until both sides stop; true when both are done.
    bool handshake() {
        for (int round = 0; round < 50; ++round) {
            client.handshake();
            toServer();
            const bool moved = !events.output.empty();
            toClient();
            if (!moved && (client.done() || client.error() != 0)) {
                break;
            }
        }
        return client.done() && session && session->handshakeComplete();
    }
    void clientSends(const Bytes& data) {
        client.write(data);
        toServer();
    }
    Bytes clientReceives(int* status = nullptr) {
        toClient();
        return client.read(status);
    }

    Events events;
    TestClient client;
    std::unique_ptr<TlsSession> session;
    std::size_t chunk;
};

// Walks TLS records (RFC 5246 §6.2.1): {content type, length} of each.
std::vector<std::pair<int, std::size_t>> records(const Bytes& bytes) {
    std::vector<std::pair<int, std::size_t>> out;
    std::size_t i = 0;
    while (i + 5 <= bytes.size()) {
        const std::size_t length = (std::size_t{bytes[i + 3]} << 8) | bytes[i + 4];
        out.emplace_back(bytes[i], length);
        i += 5 + length;
    }
    CHECK(i == bytes.size());
    return out;
}

bool hasAlert(const std::vector<TlsAlert>& alerts, int level, int description) {
    return std::any_of(alerts.begin(), alerts.end(), [&](const TlsAlert& a) {
        return a.level == level && a.description == description;
    });
}

std::vector<VerifyCode> codes(const std::vector<TlsVerifyError>& errors) {
    std::vector<VerifyCode> out;
    for (const auto& e : errors) {
        out.push_back(e.code);
    }
    return out;
}

} // namespace

TEST_SUITE("TLS sessions") {

    TEST_CASE("TLS: full handshake with an ECDSA certificate, then data both ways") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        ClientOptions options;
        options.alpn = {"http/1.1"};
        Link link(*context, options);
        REQUIRE(link.handshake());
        CHECK(link.events.handshakeDone == 1);
        CHECK(link.events.errors.empty());
        CHECK(link.session->protocolVersion() == "TLSv1.2");
        CHECK(link.session->cipherSuite() == "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256");
        CHECK(link.session->alpnProtocol() == "http/1.1");
        CHECK_FALSE(link.session->sessionResumed());
        CHECK(link.session->serverName().empty());
        CHECK_FALSE(link.session->peerCertificate().has_value());
        CHECK(link.client.peerSubject() == testCertificates().serverEcdsa.subject);
        CHECK(mbedtls_ssl_get_verify_result(&link.client.ssl()) == 0);

        link.clientSends(bytesOf("GET / HTTP/1.1\r\n\r\n"));
        CHECK(link.events.plaintext == bytesOf("GET / HTTP/1.1\r\n\r\n"));
        CHECK(link.events.plaintextCalls == 1);

        const Bytes reply = bytesOf("HTTP/1.1 101 Switching Protocols\r\n\r\n");
        link.events.outputCalls = 0;
        REQUIRE(link.session->send(reply.data(), reply.size()));
        CHECK(link.events.outputCalls == 1);
        CHECK(link.clientReceives() == reply);
    }

    TEST_CASE("TLS: an RSA certificate negotiates an ECDHE-RSA suite") {
        auto context = makeContext(serverConfiguration(testCertificates().serverRsa));
        Link link(*context, ClientOptions{});
        REQUIRE(link.handshake());
        CHECK(link.session->cipherSuite() == "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256");
        CHECK(link.client.peerSubject() == testCertificates().serverRsa.subject);
        link.clientSends(bytesOf("ping"));
        CHECK(link.events.plaintext == bytesOf("ping"));
    }

    TEST_CASE("TLS: the handshake and data survive being fed one byte at a time") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        Link link(*context, ClientOptions{}, 1);
        REQUIRE(link.handshake());
        const Bytes message = pattern(3000);
        link.clientSends(message);
        CHECK(link.events.plaintext == message);
        // A call per byte, but never more than one per receive().
        CHECK(link.events.plaintextCalls >= 1);
    }

    TEST_CASE("TLS: 1 MiB each way, records of at most 16 KiB, gathered output") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        Link link(*context, ClientOptions{}, 64 * 1024);
        REQUIRE(link.handshake());

        const Bytes up = pattern(1024 * 1024);
        link.clientSends(up);
        CHECK(link.events.plaintext == up);
        // 64 KiB of ciphertext per receive() yields under 64 KiB of plaintext:
        // one hand-off per receive().
        CHECK(link.events.plaintextCalls <= 18);

        link.events.outputCalls = 0;
        link.events.outputSizes.clear();
        const Bytes down = pattern(1024 * 1024 + 7);
        REQUIRE(link.session->send(down.data(), down.size()));
        const auto recordList = records(link.events.output);
        CHECK(recordList.size() == 65);
        for (const auto& [type, length] : recordList) {
            CHECK(type == 23);
            CHECK(length <= 16384 + 256);
        }
        // Gathered into calls of about TlsContext::outputFlushThreshold.
        CHECK(link.events.outputCalls == 17);
        for (std::size_t size : link.events.outputSizes) {
            CHECK(size <= TlsContext::outputFlushThreshold + 17 * 1024);
        }
        CHECK(link.clientReceives() == down);

        // A 40 KiB send is three records in one onTlsOutput.
        link.events.outputCalls = 0;
        const Bytes medium = pattern(40 * 1024);
        REQUIRE(link.session->send(medium.data(), medium.size()));
        CHECK(link.events.outputCalls == 1);
        CHECK(records(link.events.output).size() == 3);
        CHECK(link.clientReceives() == medium);
    }

    TEST_CASE("TLS: an idle session gives its record buffers' pages back and works on") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        Link link(*context, ClientOptions{});
        // Nothing to give back before the handshake.
        CHECK(link.session->releaseIdleMemory() == 0);
        REQUIRE(link.handshake());
        link.clientSends(bytesOf("GET / HTTP/1.1\r\n\r\n"));
        const Bytes reply = bytesOf("HTTP/1.1 101 Switching Protocols\r\n\r\n");
        REQUIRE(link.session->send(reply.data(), reply.size()));
        CHECK(link.clientReceives() == reply);
        // Each 16,717-byte buffer spans at least three whole pages past its
        // first 64 bytes.
        const std::size_t released = link.session->releaseIdleMemory();
        CHECK(released >= 2 * 3 * 4096);
        CHECK(released <= 2 * 5 * 4096);

        // Records of every size pass both ways afterwards, on zeroed pages.
        link.events.plaintext.clear();
        const Bytes up = pattern(100 * 1024 + 3);
        link.clientSends(up);
        CHECK(link.events.plaintext == up);
        const Bytes down = pattern(70 * 1024 + 1);
        REQUIRE(link.session->send(down.data(), down.size()));
        CHECK(link.clientReceives() == down);
        CHECK(link.session->releaseIdleMemory() == released);

        // Half a record waits in the input buffer: nothing is released, and
        // the record completes intact.
        link.events.plaintext.clear();
        link.client.write(bytesOf("split across two reads"));
        const Bytes record = link.client.takeOutput();
        REQUIRE(record.size() > 10);
        link.session->receive(record.data(), 10);
        CHECK(link.session->releaseIdleMemory() == 0);
        link.session->receive(record.data() + 10, record.size() - 10);
        CHECK(link.events.plaintext == bytesOf("split across two reads"));
        CHECK(link.events.errors.empty());
        CHECK(link.session->releaseIdleMemory() == released);
    }

    TEST_CASE("TLS: the handler may send and destroy from onTlsPlaintext") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        SUBCASE("echo") {
            Link link(*context, ClientOptions{});
            REQUIRE(link.handshake());
            link.events.echo = true;
            link.clientSends(bytesOf("echo me"));
            CHECK(link.clientReceives() == bytesOf("echo me"));
        }
        SUBCASE("destroy") {
            Link link(*context, ClientOptions{});
            REQUIRE(link.handshake());
            link.events.destroyOnPlaintext = true;
            // Two records in one receive(): the session is gone after the first
            // hand-off and must not touch itself again.
            link.client.write(bytesOf("first"));
            link.client.write(bytesOf("second"));
            link.toServer();
            CHECK(link.session == nullptr);
            CHECK(link.events.plaintext == bytesOf("firstsecond"));
            // The shared buffers are free again for another session.
            Link other(*context, ClientOptions{});
            REQUIRE(other.handshake());
            other.clientSends(bytesOf("x"));
            CHECK(other.events.plaintext == bytesOf("x"));
        }
    }

    TEST_CASE("TLS: send() is refused before the handshake and after close_notify") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        Link link(*context, ClientOptions{});
        const Bytes data = bytesOf("early");
        CHECK_FALSE(link.session->send(data.data(), data.size()));
        REQUIRE(link.handshake());
        link.session->sendCloseNotify();
        CHECK(link.session->closeNotifySent());
        CHECK_FALSE(link.session->send(data.data(), data.size()));
    }

} // TEST_SUITE

// The named curve of the ServerKeyExchange (RFC 8422 §5.4) in a server's
// first flight, under mbedTLS's name; empty if the flight has none.
std::string serverKeyExchangeCurve(const Bytes& flight) {
    Bytes messages; // the bodies of the handshake records, joined
    for (std::size_t i = 0; i + 5 <= flight.size();) {
        const std::size_t length = (std::size_t{flight[i + 3]} << 8) | flight[i + 4];
        if (flight[i] == 22 && i + 5 + length <= flight.size()) {
            messages.insert(messages.end(), flight.begin() + static_cast<long>(i) + 5,
                            flight.begin() + static_cast<long>(i + 5 + length));
        }
        i += 5 + length;
    }
    for (std::size_t i = 0; i + 4 <= messages.size();) {
        const std::size_t length = (std::size_t{messages[i + 1]} << 16) |
                                   (std::size_t{messages[i + 2]} << 8) | messages[i + 3];
        // server_key_exchange, curve_type named_curve, then the curve's id.
        if (messages[i] == 12 && i + 7 <= messages.size() && messages[i + 4] == 3) {
            const auto id = static_cast<std::uint16_t>((messages[i + 5] << 8) | messages[i + 6]);
            const mbedtls_ecp_curve_info* curve = mbedtls_ecp_curve_info_from_tls_id(id);
            return curve != nullptr ? curve->name : "unknown";
        }
        i += 4 + length;
    }
    return {};
}

// The curve the server picks for ECDHE when the client offers `curves`.
std::string curveChosen(TlsContext& context, std::vector<std::string> curves) {
    ClientOptions options;
    options.curves = std::move(curves);
    Link link(context, options);
    link.client.handshake();
    link.toServer();
    return serverKeyExchangeCurve(link.events.output);
}

TEST_SUITE("TLS negotiation") {

    TEST_CASE("TLS: ECDHE takes the server's first curve that the client offers") {
        // mbedTLS's own order, and a client's with no x25519 (as OpenSSL
        // offers them, less x448, which mbedTLS 2.28 lacks for TLS).
        const std::vector<std::string> largestFirst = {"secp521r1", "brainpoolP512r1", "secp384r1",
                                                       "secp256r1", "x25519"};
        const std::vector<std::string> noX25519 = {"secp521r1", "secp384r1", "secp256r1"};

        SUBCASE("the defaults: cheapest first, and only the usual four") {
            CHECK(SslConfiguration::defaultEllipticCurves() ==
                  std::vector<std::string>{"x25519", "secp256r1", "secp384r1", "secp521r1"});
            // RSA, so that the certificate puts no curve of its own in play.
            auto context = makeContext(serverConfiguration(testCertificates().serverRsa));
            CHECK(curveChosen(*context, largestFirst) == "x25519");
            CHECK(curveChosen(*context, noX25519) == "secp256r1");
            CHECK(curveChosen(*context, {"secp521r1"}) == "secp521r1");
            // Offered by no one today; not in the defaults.
            ClientOptions options;
            options.curves = {"secp192r1", "brainpoolP256r1"};
            Link link(*context, options);
            CHECK_FALSE(link.handshake());
            CHECK(link.events.handshakeDone == 0);
            CHECK(hasAlert(link.events.alertsSent, 2, 40));                    // handshake_failure
            CHECK(link.client.error() == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE); // it came
        }
        SUBCASE("a configured list, by NIST's and OpenSSL's names too") {
            SslConfiguration configuration = serverConfiguration(testCertificates().serverRsa);
            REQUIRE(configuration.setEllipticCurves({"P-384", "X25519", "prime256v1"}));
            CHECK(configuration.ellipticCurves() ==
                  std::vector<std::string>{"secp384r1", "x25519", "secp256r1"});
            auto context = makeContext(configuration);
            CHECK(curveChosen(*context, largestFirst) == "secp384r1");
            CHECK(curveChosen(*context, {"secp521r1", "secp256r1"}) == "secp256r1");
            ClientOptions options;
            options.curves = {"secp521r1"};
            Link link(*context, options);
            CHECK_FALSE(link.handshake());
            CHECK(hasAlert(link.events.alertsSent, 2, 40));
            CHECK(link.client.error() == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE); // it came
        }
        SUBCASE("unknown names are refused; an empty list restores the defaults") {
            SslConfiguration configuration;
            CHECK_FALSE(configuration.setEllipticCurves({"x25519", "P-255"}));
            CHECK(configuration.errorString() == "unknown elliptic curve 'P-255'");
            CHECK(configuration.ellipticCurves() == SslConfiguration::defaultEllipticCurves());
            REQUIRE(configuration.setEllipticCurves({"secp384r1"}));
            REQUIRE(configuration.setEllipticCurves({}));
            CHECK(configuration.ellipticCurves() == SslConfiguration::defaultEllipticCurves());
            const auto supported = SslConfiguration::supportedEllipticCurves();
            for (const std::string& name : SslConfiguration::defaultEllipticCurves()) {
                CHECK(std::find(supported.begin(), supported.end(), name) != supported.end());
            }
        }
    }

    TEST_CASE("TLS: cipher suites can be restricted, by IANA or mbedTLS name") {
        SslConfiguration configuration = serverConfiguration(testCertificates().serverEcdsa);
        REQUIRE(configuration.setCiphers({"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"}));
        CHECK(configuration.ciphers() ==
              std::vector<std::string>{"TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256"});
        auto context = makeContext(configuration);

        SUBCASE("a client that offers the suite") {
            Link link(*context, ClientOptions{});
            REQUIRE(link.handshake());
            CHECK(link.session->cipherSuite() == "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256");
        }
        SUBCASE("a client that does not") {
            ClientOptions options;
            options.ciphers = {"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"};
            Link link(*context, options);
            CHECK_FALSE(link.handshake());
            REQUIRE(link.events.errors.size() == 1);
            CHECK(link.events.errors[0].second);
            CHECK(link.events.handshakeDone == 0);
            // In the clear, so read off the wire: fatal handshake_failure.
            CHECK(hasAlert(link.events.alertsSent, 2, 40));
            CHECK(link.client.error() == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE);
        }
    }

    TEST_CASE("TLS: ALPN picks http/1.1") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        SUBCASE("offered among others") {
            ClientOptions options;
            options.alpn = {"h2", "http/1.1"};
            Link link(*context, options);
            REQUIRE(link.handshake());
            CHECK(link.session->alpnProtocol() == "http/1.1");
            CHECK(std::string_view(mbedtls_ssl_get_alpn_protocol(&link.client.ssl())) ==
                  "http/1.1");
        }
        SUBCASE("not offered") {
            Link link(*context, ClientOptions{});
            REQUIRE(link.handshake());
            CHECK(link.session->alpnProtocol().empty());
        }
        SUBCASE("only something else offered: mbedTLS refuses") {
            ClientOptions options;
            options.alpn = {"h2"};
            Link link(*context, options);
            CHECK_FALSE(link.handshake());
            REQUIRE(link.events.errors.size() == 1);
            CHECK(hasAlert(link.events.alertsSent, 2, 120)); // no_application_protocol
        }
    }

    TEST_CASE("TLS: SNI chooses the certificate") {
        SslConfiguration configuration = serverConfiguration(testCertificates().serverEcdsa);
        const auto& sni = testCertificates().sniServer;
        const auto& wildcard = testCertificates().wildcardServer;
        REQUIRE(configuration.addSniCertificate("SNI.example.com", sni.certificatePem,
                                                sni.privateKeyPem));
        REQUIRE(configuration.addSniCertificate("*.example.net", wildcard.certificatePem,
                                                wildcard.privateKeyPem));
        auto context = makeContext(configuration);

        struct Case {
            const char* asked;
            std::string expectedSubject;
        };
        const Case cases[] = {
            {"sni.example.com", sni.subject},
            {"www.example.net", wildcard.subject},
            {"a.b.example.net", testCertificates().serverEcdsa.subject}, // one label only
            {"unknown.example.org", testCertificates().serverEcdsa.subject},
            {"", testCertificates().serverEcdsa.subject},
        };
        for (const Case& c : cases) {
            CAPTURE(c.asked);
            ClientOptions options;
            options.serverName = c.asked;
            Link link(*context, options);
            REQUIRE(link.handshake());
            CHECK(link.client.peerSubject() == c.expectedSubject);
            CHECK(link.session->serverName() == c.asked);
        }
    }

    TEST_CASE("TLS: SNI without a default certificate refuses unknown names") {
        SslConfiguration configuration;
        const auto& sni = testCertificates().sniServer;
        REQUIRE(configuration.addSniCertificate("sni.example.com", sni.certificatePem,
                                                sni.privateKeyPem));
        auto context = makeContext(configuration);
        ClientOptions options;
        options.serverName = "sni.example.com";
        {
            Link link(*context, options);
            REQUIRE(link.handshake());
            CHECK(link.client.peerSubject() == sni.subject);
        }
        options.serverName = "other.example.com";
        Link link(*context, options);
        CHECK_FALSE(link.handshake());
        REQUIRE(link.events.errors.size() == 1);
        CHECK(hasAlert(link.events.alertsSent, 2, 112)); // unrecognized_name
    }

    TEST_CASE("TLS: a session ticket resumes the session") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        mbedtls_ssl_session saved;
        mbedtls_ssl_session_init(&saved);
        {
            Link first(*context, ClientOptions{});
            REQUIRE(first.handshake());
            CHECK_FALSE(first.session->sessionResumed());
            REQUIRE(mbedtls_ssl_get_session(&first.client.ssl(), &saved) == 0);
        }
        {
            ClientOptions options;
            options.resume = &saved;
            Link second(*context, options);
            REQUIRE(second.handshake());
            CHECK(second.session->sessionResumed());
            second.clientSends(bytesOf("resumed"));
            CHECK(second.events.plaintext == bytesOf("resumed"));
        }
        SUBCASE("not with another context's ticket keys") {
            auto other = makeContext(serverConfiguration(testCertificates().serverEcdsa));
            ClientOptions options;
            options.resume = &saved;
            Link third(*other, options);
            REQUIRE(third.handshake());
            CHECK_FALSE(third.session->sessionResumed());
        }
        mbedtls_ssl_session_free(&saved);
    }

    TEST_CASE("TLS: data in the same read as the client's Finished is not lost") {
        // In a resumed handshake the client speaks last and may send data
        // right behind its Finished; both arrive in one receive().
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        mbedtls_ssl_session saved;
        mbedtls_ssl_session_init(&saved);
        {
            Link first(*context, ClientOptions{});
            REQUIRE(first.handshake());
            REQUIRE(mbedtls_ssl_get_session(&first.client.ssl(), &saved) == 0);
        }
        ClientOptions options;
        options.resume = &saved;
        Link link(*context, options);
        for (int round = 0; round < 10 && !link.client.done(); ++round) {
            if (link.client.handshake() == 0) {
                break;
            }
            link.toServer();
            link.toClient();
        }
        REQUIRE(link.client.done());
        CHECK_FALSE(link.session->handshakeComplete());
        link.client.write(bytesOf("right behind"));
        link.toServer();
        CHECK(link.session->handshakeComplete());
        CHECK(link.session->sessionResumed());
        CHECK(link.events.handshakeDone == 1);
        CHECK(link.events.plaintext == bytesOf("right behind"));
        mbedtls_ssl_session_free(&saved);
    }

    TEST_CASE("TLS: with session tickets off, nothing resumes") {
        SslConfiguration configuration = serverConfiguration(testCertificates().serverEcdsa);
        configuration.setSessionTicketsEnabled(false);
        auto context = makeContext(configuration);
        mbedtls_ssl_session saved;
        mbedtls_ssl_session_init(&saved);
        {
            Link first(*context, ClientOptions{});
            REQUIRE(first.handshake());
            REQUIRE(mbedtls_ssl_get_session(&first.client.ssl(), &saved) == 0);
        }
        ClientOptions options;
        options.resume = &saved;
        Link second(*context, options);
        REQUIRE(second.handshake());
        CHECK_FALSE(second.session->sessionResumed());
        mbedtls_ssl_session_free(&saved);
    }

} // TEST_SUITE

TEST_SUITE("TLS client certificates") {

    SslConfiguration verifyingConfiguration(SslConfiguration::PeerVerifyMode mode) {
        SslConfiguration configuration = serverConfiguration(testCertificates().serverEcdsa);
        REQUIRE(configuration.setCaCertificates(testCertificates().caPem));
        configuration.setPeerVerifyMode(mode);
        return configuration;
    }

    TEST_CASE("TLS: VerifyPeer accepts a valid client certificate") {
        auto context =
            makeContext(verifyingConfiguration(SslConfiguration::PeerVerifyMode::VerifyPeer));
        ClientOptions options;
        options.identity = &testCertificates().client;
        Link link(*context, options);
        REQUIRE(link.handshake());
        CHECK(link.events.peerVerifyErrors.empty());
        CHECK(link.events.sslErrors.empty());
        CHECK(link.session->peerVerifyFlags() == 0);
        const auto peer = link.session->peerCertificate();
        REQUIRE(peer.has_value());
        CHECK(peer->subject == testCertificates().client.subject);
        CHECK(peer->issuer == "CN=wsgate test CA, O=wsgate test");
        CHECK(!peer->serialNumber.empty());
        CHECK(peer->notBefore < peer->notAfter);
        CHECK(!peer->der.empty());
    }

    TEST_CASE("TLS: VerifyPeer reports what is wrong with a client certificate") {
        auto context =
            makeContext(verifyingConfiguration(SslConfiguration::PeerVerifyMode::VerifyPeer));
        struct Case {
            const char* name;
            const TestIdentity* identity;
            VerifyCode expected;
            int expectedAlert;
        };
        const auto& certs = testCertificates();
        const Case cases[] = {
            {"missing", nullptr, VerifyCode::NoPeerCertificate, 40},
            {"another CA", &certs.clientOtherCa, VerifyCode::UnableToGetLocalIssuerCertificate, 42},
            {"expired", &certs.clientExpired, VerifyCode::CertificateExpired, 42},
            {"self-signed", &certs.clientSelfSigned, VerifyCode::SelfSignedCertificate, 42},
            {"server-only purpose", &certs.clientServerAuthOnly, VerifyCode::InvalidPurpose, 42},
        };
        for (const Case& c : cases) {
            CAPTURE(c.name);
            ClientOptions options;
            options.identity = c.identity;
            Link link(*context, options);
            link.handshake();
            // Reported one by one, then as a list; refused by default.
            REQUIRE(!link.events.peerVerifyErrors.empty());
            CHECK(link.events.peerVerifyErrors[0].code == c.expected);
            if (c.identity != nullptr) {
                CHECK(link.events.peerVerifyErrors[0].subject == c.identity->subject);
                CHECK(link.events.peerVerifyErrors[0].depth == 0);
            } else {
                CHECK(link.events.peerVerifyErrors[0].depth == -1);
            }
            REQUIRE(link.events.sslErrors.size() == 1);
            CHECK(codes(link.events.sslErrors[0]) == codes(link.events.peerVerifyErrors));
            CHECK(link.session->peerVerifyErrors().size() == link.events.peerVerifyErrors.size());
            CHECK(link.events.handshakeDone == 0);
            REQUIRE(link.events.errors.size() == 1);
            CHECK(link.events.errors[0].second);
            CHECK(link.events.errors[0].first == (c.identity == nullptr
                                                      ? MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE
                                                      : MBEDTLS_ERR_X509_CERT_VERIFY_FAILED));
            CHECK(hasAlert(link.events.alertsSent, 2, c.expectedAlert));
            CHECK(link.session->peerVerifyFlags() != 0);
            // The client learns with the alert.
            int status = 0;
            link.clientReceives(&status);
            CHECK(status == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE);
        }
    }

    TEST_CASE("TLS: VerifyPeer errors that the handler ignores let the client in") {
        auto context =
            makeContext(verifyingConfiguration(SslConfiguration::PeerVerifyMode::VerifyPeer));
        ClientOptions options;
        options.identity = &testCertificates().clientExpired;
        Link link(*context, options);
        link.events.ignoreSslErrors = true;
        REQUIRE(link.handshake());
        CHECK(link.events.handshakeDone == 1);
        REQUIRE(link.events.sslErrors.size() == 1);
        CHECK(codes(link.events.sslErrors[0]) == std::vector{VerifyCode::CertificateExpired});
    }

    TEST_CASE("TLS: a refused client cannot come back with its session ticket") {
        auto context =
            makeContext(verifyingConfiguration(SslConfiguration::PeerVerifyMode::VerifyPeer));
        mbedtls_ssl_session saved;
        mbedtls_ssl_session_init(&saved);
        ClientOptions options;
        options.identity = &testCertificates().clientExpired;
        {
            Link first(*context, options);
            first.handshake();
            REQUIRE(first.events.errors.size() == 1);
            // The client's side of the handshake completed before our alert.
            REQUIRE(first.client.done());
            REQUIRE(mbedtls_ssl_get_session(&first.client.ssl(), &saved) == 0);
        }
        options.resume = &saved;
        Link second(*context, options);
        second.handshake();
        CHECK(second.session->sessionResumed());
        REQUIRE(second.events.sslErrors.size() == 1);
        CHECK(codes(second.events.sslErrors[0]) == std::vector{VerifyCode::CertificateExpired});
        CHECK(second.events.handshakeDone == 0);
        CHECK(second.events.errors.size() == 1);
        mbedtls_ssl_session_free(&saved);
    }

    TEST_CASE("TLS: QueryPeer keeps the problems without reporting them") {
        auto context =
            makeContext(verifyingConfiguration(SslConfiguration::PeerVerifyMode::QueryPeer));
        SUBCASE("expired") {
            ClientOptions options;
            options.identity = &testCertificates().clientExpired;
            Link link(*context, options);
            REQUIRE(link.handshake());
            CHECK(link.events.peerVerifyErrors.empty());
            CHECK(link.events.sslErrors.empty());
            CHECK(codes(link.session->peerVerifyErrors()) ==
                  std::vector{VerifyCode::CertificateExpired});
            CHECK(link.session->peerVerifyFlags() == MBEDTLS_X509_BADCERT_EXPIRED);
            REQUIRE(link.session->peerCertificate().has_value());
        }
        SUBCASE("missing") {
            Link link(*context, ClientOptions{});
            REQUIRE(link.handshake());
            CHECK(codes(link.session->peerVerifyErrors()) ==
                  std::vector{VerifyCode::NoPeerCertificate});
            CHECK_FALSE(link.session->peerCertificate().has_value());
        }
        SUBCASE("AutoVerifyPeer is QueryPeer on a server") {
            auto autoContext = makeContext(
                verifyingConfiguration(SslConfiguration::PeerVerifyMode::AutoVerifyPeer));
            CHECK(autoContext->peerVerifyMode() == SslConfiguration::PeerVerifyMode::QueryPeer);
            Link link(*autoContext, ClientOptions{});
            REQUIRE(link.handshake());
        }
    }

    TEST_CASE("TLS: VerifyNone asks for no certificate") {
        auto context =
            makeContext(verifyingConfiguration(SslConfiguration::PeerVerifyMode::VerifyNone));
        ClientOptions options;
        options.identity = &testCertificates().client;
        Link link(*context, options);
        REQUIRE(link.handshake());
        CHECK_FALSE(link.session->peerCertificate().has_value());
        CHECK(link.session->peerVerifyErrors().empty());
    }

    TEST_CASE("TLS: peer verify depth limits the chain") {
        SslConfiguration configuration =
            verifyingConfiguration(SslConfiguration::PeerVerifyMode::VerifyPeer);
        ClientOptions options;
        options.identity = &testCertificates().clientViaIntermediate;
        SUBCASE("no limit") {
            auto context = makeContext(configuration);
            Link link(*context, options);
            REQUIRE(link.handshake());
            CHECK(link.events.peerVerifyErrors.empty());
        }
        SUBCASE("client, intermediate and root are three") {
            configuration.setPeerVerifyDepth(3);
            auto context = makeContext(configuration);
            Link link(*context, options);
            REQUIRE(link.handshake());
        }
        SUBCASE("two is too few") {
            configuration.setPeerVerifyDepth(2);
            auto context = makeContext(configuration);
            Link link(*context, options);
            CHECK_FALSE(link.handshake());
            REQUIRE(link.events.peerVerifyErrors.size() == 1);
            CHECK(link.events.peerVerifyErrors[0].code == VerifyCode::PathLengthExceeded);
            CHECK(link.events.peerVerifyErrors[0].depth == 2);
            CHECK(link.events.peerVerifyErrors[0].subject == "CN=wsgate test CA, O=wsgate test");
        }
    }

    TEST_CASE("TLS: handshakeMustInterruptOnError asks at the first problem") {
        SslConfiguration configuration =
            verifyingConfiguration(SslConfiguration::PeerVerifyMode::VerifyPeer);
        configuration.setHandshakeMustInterruptOnError(true);
        auto context = makeContext(configuration);
        ClientOptions options;
        options.identity = &testCertificates().clientExpired;
        SUBCASE("stop") {
            Link link(*context, options);
            CHECK_FALSE(link.handshake());
            REQUIRE(link.events.interruptions.size() == 1);
            CHECK(link.events.interruptions[0].code == VerifyCode::CertificateExpired);
            CHECK(link.session->handshakeInterrupted());
            CHECK(link.events.sslErrors.empty());
            REQUIRE(link.events.errors.size() == 1);
            CHECK(link.events.errors[0].second);
            // mbedTLS picks access_denied when the verify callback fails.
            CHECK(hasAlert(link.events.alertsSent, 2, 49));
        }
        SUBCASE("go on, then ignore") {
            Link link(*context, options);
            link.events.continueAfterInterrupt = true;
            link.events.ignoreSslErrors = true;
            REQUIRE(link.handshake());
            CHECK(link.events.interruptions.size() == 1);
            CHECK_FALSE(link.session->handshakeInterrupted());
            CHECK(link.events.sslErrors.size() == 1);
        }
    }

} // TEST_SUITE

TEST_SUITE("TLS pre-shared keys") {

    TEST_CASE("TLS: PSK with the right key, a wrong key, an unknown identity") {
        SslConfiguration configuration;
        REQUIRE(configuration.setCiphers(
            {"TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256", "TLS_PSK_WITH_AES_128_GCM_SHA256"}));
        configuration.setPreSharedKeyIdentityHint("wsgate hint");
        auto context = makeContext(configuration);
        CHECK(context->preSharedKeysEnabled());
        const Bytes key = pattern(32);

        ClientOptions options;
        options.trustPem.clear();
        options.pskIdentity = "alice";
        options.psk = key;
        SUBCASE("right key") {
            Link link(*context, options);
            link.events.pskKeys["alice"] = key;
            REQUIRE(link.handshake());
            CHECK(link.session->cipherSuite() == "TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256");
            CHECK(link.events.pskIdentities == std::vector<std::string>{"alice"});
            CHECK(link.events.pskHints == std::vector<std::string>{"wsgate hint"});
            link.clientSends(bytesOf("psk data"));
            CHECK(link.events.plaintext == bytesOf("psk data"));
        }
        SUBCASE("wrong key") {
            Link link(*context, options);
            Bytes wrong = key;
            wrong[0] ^= 1;
            link.events.pskKeys["alice"] = wrong;
            CHECK_FALSE(link.handshake());
            REQUIRE(link.events.errors.size() == 1);
            CHECK(link.events.errors[0].second);
            CHECK(link.events.handshakeDone == 0);
        }
        SUBCASE("unknown identity") {
            Link link(*context, options);
            CHECK_FALSE(link.handshake());
            REQUIRE(link.events.errors.size() == 1);
            CHECK(hasAlert(link.events.alertsSent, 2, 115)); // unknown_psk_identity
            CHECK(link.client.error() == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE);
        }
    }

} // TEST_SUITE

TEST_SUITE("TLS failures and alerts") {

    TEST_CASE("TLS: garbage and plain HTTP fail cleanly") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        const std::string inputs[] = {
            "GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\r\n",
            std::string("\x16\x03\x03\x00\x05\x01\x00\x00\x01\xff", 10),
            std::string(4096, '\xff'),
            std::string("\x15\x03\x03\x00\x02\x02\x28", 7),
        };
        for (const std::string& input : inputs) {
            for (const std::size_t chunk : {std::size_t{0}, std::size_t{1}}) {
                CAPTURE(input.size());
                CAPTURE(chunk);
                Events events;
                TlsSession session(*context, events);
                const auto* data = reinterpret_cast<const std::uint8_t*>(input.data());
                const std::size_t step = chunk == 0 ? input.size() : chunk;
                for (std::size_t i = 0; i < input.size(); i += step) {
                    session.receive(data + i, std::min(step, input.size() - i));
                }
                REQUIRE(events.errors.size() == 1);
                CHECK(events.errors[0].first < 0);
                CHECK(events.errors[0].second);
                CHECK(events.handshakeDone == 0);
                CHECK(session.failed());
                // Whatever went out is whole records.
                records(events.output);
                const Bytes more = bytesOf("more");
                session.receive(more.data(), more.size());
                CHECK(events.errors.size() == 1);
            }
        }
    }

    TEST_CASE("TLS: a fatal alert in the clear during the handshake is read") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        ClientOptions options;
        // A client that requires a trusted server certificate refuses ours.
        options.trustPem = testCertificates().otherCaPem;
        options.requireTrustedServer = true;
        Link link(*context, options);
        CHECK_FALSE(link.handshake());
        REQUIRE(link.events.errors.size() == 1);
        CHECK(link.events.errors[0].first == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE);
        CHECK(link.events.errors[0].second);
        REQUIRE(link.events.alertsReceived.size() == 1);
        CHECK(link.events.alertsReceived[0].level == 2);
        CHECK(link.events.alertsReceived[0].description == 48); // unknown_ca
    }

    TEST_CASE("TLS: close_notify both ways") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        SUBCASE("from the client") {
            Link link(*context, ClientOptions{});
            REQUIRE(link.handshake());
            link.client.write(bytesOf("last words"));
            REQUIRE(mbedtls_ssl_close_notify(&link.client.ssl()) == 0);
            link.toServer();
            CHECK(link.events.plaintext == bytesOf("last words"));
            CHECK(link.events.closeNotify == 1);
            CHECK(link.session->closeNotifyReceived());
            REQUIRE(link.events.alertsReceived.size() == 1);
            CHECK(link.events.alertsReceived[0].level == 1);
            CHECK(link.events.alertsReceived[0].description == 0);
            CHECK(link.events.errors.empty());
            // The session may still answer.
            link.session->sendCloseNotify();
            int status = 0;
            link.clientReceives(&status);
            CHECK(status == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY);
        }
        SUBCASE("from the server") {
            Link link(*context, ClientOptions{});
            REQUIRE(link.handshake());
            link.events.outputCalls = 0;
            link.session->sendCloseNotify();
            link.session->sendCloseNotify(); // Once only.
            CHECK(link.events.outputCalls == 1);
            REQUIRE(link.events.alertsSent.size() == 1);
            CHECK(link.events.alertsSent[0].level == 1);
            CHECK(link.events.alertsSent[0].description == 0);
            int status = 0;
            link.clientReceives(&status);
            CHECK(status == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY);
        }
    }

    TEST_CASE("TLS: encrypted alerts from the client are read") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        Link link(*context, ClientOptions{});
        REQUIRE(link.handshake());
        SUBCASE("a warning, which mbedTLS skips") {
            REQUIRE(mbedtls_ssl_send_alert_message(&link.client.ssl(), 1, 90) ==
                    0); // user_canceled
            link.client.write(bytesOf("after"));
            link.toServer();
            REQUIRE(link.events.alertsReceived.size() == 1);
            CHECK(link.events.alertsReceived[0].level == 1);
            CHECK(link.events.alertsReceived[0].description == 90);
            CHECK(link.events.plaintext == bytesOf("after"));
            CHECK(link.events.errors.empty());
        }
        SUBCASE("several warnings in one read") {
            REQUIRE(mbedtls_ssl_send_alert_message(&link.client.ssl(), 1, 90) == 0);
            REQUIRE(mbedtls_ssl_send_alert_message(&link.client.ssl(), 1, 100) == 0);
            link.client.write(bytesOf("x"));
            REQUIRE(mbedtls_ssl_send_alert_message(&link.client.ssl(), 1, 90) == 0);
            link.toServer();
            REQUIRE(link.events.alertsReceived.size() == 3);
            CHECK(link.events.alertsReceived[0].description == 90);
            CHECK(link.events.alertsReceived[1].description == 100);
            CHECK(link.events.alertsReceived[2].description == 90);
            CHECK(link.events.plaintext == bytesOf("x"));
        }
        SUBCASE("a warning at the end of the input") {
            REQUIRE(mbedtls_ssl_send_alert_message(&link.client.ssl(), 1, 90) == 0);
            link.toServer();
            REQUIRE(link.events.alertsReceived.size() == 1);
            CHECK(link.events.alertsReceived[0].description == 90);
        }
        SUBCASE("a fatal alert") {
            REQUIRE(mbedtls_ssl_send_alert_message(&link.client.ssl(), 2, 80) ==
                    0); // internal_error
            link.toServer();
            REQUIRE(link.events.alertsReceived.size() == 1);
            CHECK(link.events.alertsReceived[0].level == 2);
            CHECK(link.events.alertsReceived[0].description == 80);
            REQUIRE(link.events.errors.size() == 1);
            CHECK(link.events.errors[0].first == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE);
            CHECK_FALSE(link.events.errors[0].second);
        }
    }

    TEST_CASE("TLS: a renegotiation attempt is refused with a warning") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        ClientOptions options;
        options.allowRenegotiation = true;
        Link link(*context, options);
        REQUIRE(link.handshake());
        link.client.write(bytesOf("before"));
        CHECK(mbedtls_ssl_renegotiate(&link.client.ssl()) == MBEDTLS_ERR_SSL_WANT_READ);
        link.toServer();
        CHECK(link.events.plaintext == bytesOf("before"));
        CHECK(link.events.errors.empty());
        // no_renegotiation goes out encrypted: seen, not readable.
        REQUIRE(link.events.alertsSent.size() == 1);
        CHECK(link.events.alertsSent[0].level == TlsAlert::unknown);
        const Bytes data = bytesOf("still here");
        CHECK(link.session->send(data.data(), data.size()));
    }

    TEST_CASE("TLS: a tampered record fails the session after the handshake") {
        auto context = makeContext(serverConfiguration(testCertificates().serverEcdsa));
        Link link(*context, ClientOptions{});
        REQUIRE(link.handshake());
        link.client.write(bytesOf("tamper with me"));
        Bytes bytes = link.client.takeOutput();
        bytes.back() ^= 0x01;
        link.session->receive(bytes.data(), bytes.size());
        REQUIRE(link.events.errors.size() == 1);
        CHECK(link.events.errors[0].first == MBEDTLS_ERR_SSL_INVALID_MAC);
        CHECK_FALSE(link.events.errors[0].second);
        CHECK(link.events.plaintext.empty());
        // mbedTLS sends bad_record_mac, encrypted: seen, but not readable.
        REQUIRE(link.events.alertsSent.size() == 1);
        CHECK(link.events.alertsSent[0].level == TlsAlert::unknown);
    }

} // TEST_SUITE

TEST_SUITE("TLS configuration") {

    TEST_CASE("TLS: SslConfiguration defaults") {
        const SslConfiguration configuration;
        CHECK(configuration.peerVerifyMode() == SslConfiguration::PeerVerifyMode::VerifyNone);
        CHECK(configuration.peerVerifyDepth() == 0);
        CHECK(configuration.allowedNextProtocols() == std::vector<std::string>{"http/1.1"});
        CHECK(configuration.sessionTicketsEnabled());
        CHECK(configuration.sessionTicketLifetime() == std::chrono::seconds{86400});
        CHECK(configuration.ciphers() == SslConfiguration::defaultCiphers());
        CHECK_FALSE(configuration.handshakeMustInterruptOnError());
        CHECK(configuration.localCertificateChain().empty());
        CHECK(configuration.privateKey().empty());
        CHECK(configuration.errorString().empty());
        const auto supported = SslConfiguration::supportedCiphers();
        for (const std::string& name : SslConfiguration::defaultCiphers()) {
            CHECK(std::find(supported.begin(), supported.end(), name) != supported.end());
        }
    }

    TEST_CASE("TLS: SslConfiguration loading errors") {
        const auto& certs = testCertificates();
        SslConfiguration configuration;
        CHECK_FALSE(configuration.setLocalCertificateChain("not a certificate"));
        CHECK_FALSE(configuration.errorString().empty());
        CHECK(configuration.setLocalCertificateChain(certs.serverEcdsa.certificatePem));
        CHECK(configuration.errorString().empty());
        CHECK(configuration.localCertificateChain().size() == 1);

        CHECK_FALSE(configuration.setPrivateKey("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC "
                                                "PRIVATE KEY-----\n"));
        CHECK_FALSE(configuration.setPrivateKey(certs.serverEcdsaEncryptedKeyPem));
        CHECK(configuration.errorString().find("passphrase") != std::string::npos);
        CHECK_FALSE(configuration.setPrivateKey(certs.serverEcdsaEncryptedKeyPem, "wrong"));
        CHECK(configuration.privateKey().empty());
        CHECK(configuration.setPrivateKey(certs.serverEcdsaEncryptedKeyPem, certs.passphrase));
        CHECK_FALSE(configuration.privateKey().empty());

        CHECK_FALSE(configuration.setLocalCertificateChainFromFile("/nonexistent/cert.pem"));
        CHECK(configuration.errorString().find("/nonexistent/cert.pem") != std::string::npos);
        CHECK(configuration.localCertificateChain().size() == 1);

        CHECK_FALSE(configuration.setCiphers({"TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256", "NOPE"}));
        CHECK(configuration.errorString().find("NOPE") != std::string::npos);
        CHECK(configuration.ciphers() == SslConfiguration::defaultCiphers());
        CHECK_FALSE(configuration.setCiphers({"TLS-DHE-RSA-WITH-AES-128-GCM-SHA256"}));
        CHECK(configuration.setCiphers({}));

        CHECK_FALSE(configuration.setAllowedNextProtocols({"http/1.1", ""}));
        CHECK(configuration.allowedNextProtocols() == std::vector<std::string>{"http/1.1"});

        CHECK_FALSE(configuration.addSniCertificate("bad name!", certs.sniServer.certificatePem,
                                                    certs.sniServer.privateKeyPem));
        CHECK_FALSE(configuration.addSniCertificate(
            "sni.example.com", certs.sniServer.certificatePem, certs.client.privateKeyPem));
        CHECK(configuration.errorString().find("does not match") != std::string::npos);
        CHECK(configuration.sniCertificates().empty());

        // The encrypted key works when the server is built.
        auto context = makeContext(configuration);
        Link link(*context, ClientOptions{});
        CHECK(link.handshake());
    }

    TEST_CASE("TLS: SslConfiguration reads files and copies by value") {
        const auto& certs = testCertificates();
        char directory[] = "/tmp/wsgate-tls-XXXXXX";
        REQUIRE(mkdtemp(directory) != nullptr);
        const std::string chainPath = std::string(directory) + "/chain.pem";
        const std::string keyPath = std::string(directory) + "/key.pem";
        for (const auto& [path, text] : {std::pair{chainPath, certs.serverRsa.certificatePem},
                                         std::pair{keyPath, certs.serverRsa.privateKeyPem}}) {
            std::FILE* file = std::fopen(path.c_str(), "wb");
            REQUIRE(file != nullptr);
            std::fwrite(text.data(), 1, text.size(), file);
            std::fclose(file);
        }
        SslConfiguration configuration;
        CHECK(configuration.setLocalCertificateChainFromFile(chainPath));
        CHECK(configuration.setPrivateKeyFromFile(keyPath));
        SslConfiguration copy = configuration;
        configuration.setPeerVerifyMode(SslConfiguration::PeerVerifyMode::VerifyPeer);
        CHECK(copy.peerVerifyMode() == SslConfiguration::PeerVerifyMode::VerifyNone);
        SslConfiguration moved = std::move(copy);
        CHECK(moved.privateKey() == configuration.privateKey());
        auto context = makeContext(moved);
        Link link(*context, ClientOptions{});
        CHECK(link.handshake());
        std::remove(chainPath.c_str());
        std::remove(keyPath.c_str());
        rmdir(directory);
    }

    TEST_CASE("TLS: TlsContext refuses inconsistent configurations") {
        const auto& certs = testCertificates();
        SUBCASE("a chain without a key") {
            SslConfiguration configuration;
            REQUIRE(configuration.setLocalCertificateChain(certs.serverEcdsa.certificatePem));
            CHECK(contextError(configuration).find("no private key") != std::string::npos);
        }
        SUBCASE("a key without a chain") {
            SslConfiguration configuration;
            REQUIRE(configuration.setPrivateKey(certs.serverEcdsa.privateKeyPem));
            CHECK(contextError(configuration).find("no local certificate chain") !=
                  std::string::npos);
        }
        SUBCASE("nothing at all") {
            CHECK(contextError(SslConfiguration()).find("no local certificate") !=
                  std::string::npos);
        }
        SUBCASE("a key that does not match") {
            SslConfiguration configuration;
            REQUIRE(configuration.setLocalCertificateChain(certs.serverEcdsa.certificatePem));
            REQUIRE(configuration.setPrivateKey(certs.client.privateKeyPem));
            CHECK(contextError(configuration).find("does not match") != std::string::npos);
        }
        SUBCASE("an RSA key with ECDSA suites only") {
            SslConfiguration configuration = serverConfiguration(certs.serverRsa);
            REQUIRE(configuration.setCiphers({"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256"}));
            CHECK(contextError(configuration).find("RSA") != std::string::npos);
        }
        SUBCASE("VerifyPeer without CA certificates") {
            SslConfiguration configuration = serverConfiguration(certs.serverEcdsa);
            configuration.setPeerVerifyMode(SslConfiguration::PeerVerifyMode::VerifyPeer);
            CHECK(contextError(configuration).find("CA certificates") != std::string::npos);
        }
    }

} // TEST_SUITE

TEST_SUITE("TLS memory") {

    TEST_CASE("TLS: heap held by one idle session") {
        const TestIdentity* identity = &testCertificates().serverEcdsa;
        SUBCASE("ECDSA") {
        }
        SUBCASE("RSA") {
            identity = &testCertificates().serverRsa;
        }
        CAPTURE(identity->subject);
        auto context = makeContext(serverConfiguration(*identity));
        // Warm the shared buffers and mbedTLS's lazily built tables first.
        {
            Link warm(*context, ClientOptions{});
            REQUIRE(warm.handshake());
            warm.clientSends(bytesOf("warm"));
            const Bytes reply = bytesOf("up");
            REQUIRE(warm.session->send(reply.data(), reply.size()));
        }
        Link link(*context, ClientOptions{});
        link.session.reset();
        const std::size_t before = heapInUse();
        link.session = std::make_unique<TlsSession>(*context, link.events);
        link.events.session = link.session.get();
        const std::size_t constructed = heapInUse() - before;

        link.client.handshake();
        link.toServer(); // ClientHello in, server flight out.
        const std::size_t midHandshake = heapInUse() - before;
        REQUIRE(link.handshake());
        link.clientSends(bytesOf("hello"));
        const Bytes reply = bytesOf("hi");
        REQUIRE(link.session->send(reply.data(), reply.size()));
        const std::size_t idleWithClient = heapInUse();
        link.session.reset();
        const std::size_t idle = idleWithClient - heapInUse();

        MESSAGE(identity->subject << ": sizeof(TlsSession) = " << sizeof(TlsSession)
                                  << ", sizeof(mbedtls_ssl_context) = "
                                  << sizeof(mbedtls_ssl_context));
        MESSAGE("heap: constructed " << constructed << " B, mid-handshake " << midHandshake
                                     << " B, idle after the handshake " << idle << " B");
        // Nothing until the first bytes arrive.
        CHECK(constructed <= sizeof(TlsSession) + 64);
        // Two 16 KiB record buffers and the negotiated state; the handshake's
        // own state is gone.
        CHECK(idle < 40 * 1024);
        CHECK(idle < midHandshake);
    }

} // TEST_SUITE
