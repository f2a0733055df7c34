#include "support/TlsClient.h"

#include <errno.h>
#include <fcntl.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/ssl_internal.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>

// The resumption check and the alert bytes read mbedTLS 2.28's context
// members, which 3.x made private.
static_assert(MBEDTLS_VERSION_MAJOR == 2, "TlsClient reads mbedTLS 2.x context members");

namespace wsgate::test {

namespace {

using Clock = std::chrono::steady_clock;

int remainingMs(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    // Round up so that a deadline a fraction of a millisecond away still polls.
    return left.count() < 0 ? 0 : static_cast<int>(left.count()) + 1;
}

const unsigned char* bytesOf(std::string_view text) {
    return reinterpret_cast<const unsigned char*>(text.data());
}

std::string describeName(const mbedtls_x509_name& name) {
    char text[512];
    const int size = mbedtls_x509_dn_gets(text, sizeof text, &name);
    return size > 0 ? std::string(text, static_cast<std::size_t>(size)) : std::string();
}

} // namespace

std::string mbedtlsErrorString(int error) {
    char text[256];
    mbedtls_strerror(error, text, sizeof text);
    char code[16];
    std::snprintf(code, sizeof code, "-0x%04X", static_cast<unsigned>(-error));
    return std::string(text) + " (" + code + ")";
}

class TlsClientSession {
public:
    TlsClientSession() { mbedtls_ssl_session_init(&session); }
    ~TlsClientSession() { mbedtls_ssl_session_free(&session); }
    TlsClientSession(const TlsClientSession&) = delete;
    TlsClientSession& operator=(const TlsClientSession&) = delete;
    mbedtls_ssl_session session;
};

struct TlsClient::Impl {
    Impl() {
        mbedtls_entropy_init(&entropy);
        mbedtls_ctr_drbg_init(&drbg);
        mbedtls_ssl_config_init(&config);
        mbedtls_ssl_init(&ssl);
        mbedtls_x509_crt_init(&ca);
        mbedtls_x509_crt_init(&ownChain);
        mbedtls_pk_init(&ownKey);
    }
    ~Impl() {
        mbedtls_ssl_free(&ssl);
        mbedtls_ssl_config_free(&config);
        mbedtls_pk_free(&ownKey);
        mbedtls_x509_crt_free(&ownChain);
        mbedtls_x509_crt_free(&ca);
        mbedtls_ctr_drbg_free(&drbg);
        mbedtls_entropy_free(&entropy);
    }
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;

    int fd = -1;
    bool ready = false;
    std::chrono::milliseconds timeout{5000};
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_config config;
    mbedtls_ssl_context ssl;
    mbedtls_x509_crt ca;
    mbedtls_x509_crt ownChain;
    mbedtls_pk_context ownKey;
    // mbedTLS keeps pointers to these lists, so they live here.
    std::vector<int> suites;
    std::vector<std::string> alpnNames;
    std::vector<const char*> alpnList;

    // The receive callback waits for the socket until readDeadline; the send
    // callback gives up after `stall` without progress.
    Clock::time_point readDeadline{};
    std::chrono::milliseconds stall{5000};
    // Ciphertext that arrived while the send callback waited for room:
    // mbedTLS is not re-entered to decrypt it, the receive callback serves it.
    std::string stash;
    std::size_t stashTaken = 0;
    bool tcpEof = false;
    bool tcpReset = false;
    std::array<unsigned char, 16384> plaintext{};

    /// Reads what the socket holds into the stash without waiting.
    void stashReadable();
    static int bioSend(void* self, const unsigned char* data, std::size_t size);
    static int bioReceive(void* self, unsigned char* data, std::size_t size);
};

void TlsClient::Impl::stashReadable() {
    if (stashTaken == stash.size()) {
        stash.clear();
        stashTaken = 0;
    }
    char chunk[65536];
    for (;;) {
        const ssize_t n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n > 0) {
            stash.append(chunk, static_cast<std::size_t>(n));
            continue;
        }
        if (n == 0) {
            tcpEof = true;
        } else if (errno == EINTR) {
            continue;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            tcpReset = true;
        }
        return;
    }
}

int TlsClient::Impl::bioSend(void* context, const unsigned char* data, std::size_t size) {
    auto* self = static_cast<Impl*>(context);
    const auto deadline = Clock::now() + self->stall;
    for (;;) {
        const ssize_t n = ::send(self->fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            return static_cast<int>(n);
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
                                                         : MBEDTLS_ERR_NET_SEND_FAILED;
        }
        // Keep reading while the socket is full: the server may be blocked
        // writing its echo of what we already sent.
        const bool wantRead = !self->tcpEof && !self->tcpReset;
        pollfd p{self->fd, static_cast<short>(POLLOUT | (wantRead ? POLLIN : 0)), 0};
        const int rc = ::poll(&p, 1, remainingMs(deadline));
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        if (rc <= 0) {
            return MBEDTLS_ERR_SSL_TIMEOUT;
        }
        if ((p.revents & POLLIN) != 0 && wantRead) {
            self->stashReadable();
        }
    }
}

int TlsClient::Impl::bioReceive(void* context, unsigned char* data, std::size_t size) {
    auto* self = static_cast<Impl*>(context);
    if (self->stashTaken < self->stash.size()) {
        const std::size_t n = std::min(size, self->stash.size() - self->stashTaken);
        std::copy_n(self->stash.data() + self->stashTaken, n, data);
        self->stashTaken += n;
        return static_cast<int>(n);
    }
    if (self->tcpReset) {
        return MBEDTLS_ERR_NET_CONN_RESET;
    }
    if (self->tcpEof) {
        return 0;
    }
    for (;;) {
        const ssize_t n = ::recv(self->fd, data, size, MSG_DONTWAIT);
        if (n > 0) {
            return static_cast<int>(n);
        }
        if (n == 0) {
            self->tcpEof = true;
            return 0;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            self->tcpReset = true;
            return MBEDTLS_ERR_NET_CONN_RESET;
        }
        pollfd p{self->fd, POLLIN, 0};
        const int rc = ::poll(&p, 1, remainingMs(self->readDeadline));
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        if (rc <= 0) {
            return MBEDTLS_ERR_SSL_WANT_READ;
        }
    }
}

TlsClient::TlsClient() : impl_(std::make_unique<Impl>()) {
}

TlsClient::~TlsClient() = default;

void TlsClient::fail(int error, std::string_view what) {
    lastError_ = error;
    errorString_ = std::string(what);
    if (error < 0) {
        errorString_ += ": " + mbedtlsErrorString(error);
    }
}

bool TlsClient::setup(int fd, const TlsClientOptions& options) {
    Impl& d = *impl_;
    if (d.ready) {
        fail(1, "setup() called twice");
        return false;
    }
    d.fd = fd;
    d.timeout = options.timeout;
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        fail(1, "cannot make the socket non-blocking");
        return false;
    }
    int rc = mbedtls_ctr_drbg_seed(&d.drbg, mbedtls_entropy_func, &d.entropy, nullptr, 0);
    if (rc != 0) {
        fail(rc, "ctr_drbg_seed");
        return false;
    }
    rc = mbedtls_ssl_config_defaults(&d.config, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                     MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) {
        fail(rc, "ssl_config_defaults");
        return false;
    }
    mbedtls_ssl_conf_rng(&d.config, mbedtls_ctr_drbg_random, &d.drbg);
    // Browsers' order. mbedTLS 2.28's own starts with secp521r1, which would
    // make every test handshake several times slower.
    static const mbedtls_ecp_group_id curves[] = {MBEDTLS_ECP_DP_SECP256R1,
                                                  MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_NONE};
    mbedtls_ssl_conf_curves(&d.config, curves);
    // TLS 1.2 only, as the server.
    mbedtls_ssl_conf_min_version(&d.config, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&d.config, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);

    const ServerVerify verify = options.verify.value_or(
        options.caPem.empty() ? ServerVerify::None : ServerVerify::Required);
    if (!options.caPem.empty()) {
        rc = mbedtls_x509_crt_parse(&d.ca, bytesOf(options.caPem), options.caPem.size() + 1);
        if (rc != 0) {
            fail(rc, "parsing caPem");
            return false;
        }
        mbedtls_ssl_conf_ca_chain(&d.config, &d.ca, nullptr);
    } else if (verify != ServerVerify::None) {
        fail(1, "verifying the server needs caPem");
        return false;
    }
    mbedtls_ssl_conf_authmode(&d.config, verify == ServerVerify::None ? MBEDTLS_SSL_VERIFY_NONE
                                         : verify == ServerVerify::Optional
                                             ? MBEDTLS_SSL_VERIFY_OPTIONAL
                                             : MBEDTLS_SSL_VERIFY_REQUIRED);

    if (options.certificatePem.empty() != options.privateKeyPem.empty()) {
        fail(1, "a client certificate needs its key and the reverse");
        return false;
    }
    if (!options.certificatePem.empty()) {
        rc = mbedtls_x509_crt_parse(&d.ownChain, bytesOf(options.certificatePem),
                                    options.certificatePem.size() + 1);
        if (rc == 0) {
            rc = mbedtls_pk_parse_key(&d.ownKey, bytesOf(options.privateKeyPem),
                                      options.privateKeyPem.size() + 1, nullptr, 0);
        }
        if (rc == 0) {
            rc = mbedtls_ssl_conf_own_cert(&d.config, &d.ownChain, &d.ownKey);
        }
        if (rc != 0) {
            fail(rc, "loading the client certificate");
            return false;
        }
    }

    if (!options.ciphers.empty()) {
        for (const auto& name : options.ciphers) {
            const int id = mbedtls_ssl_get_ciphersuite_id(name.c_str());
            if (id == 0) {
                fail(1, "unknown cipher suite " + name);
                return false;
            }
            d.suites.push_back(id);
        }
        d.suites.push_back(0);
        mbedtls_ssl_conf_ciphersuites(&d.config, d.suites.data());
    }
    if (!options.alpn.empty()) {
        d.alpnNames = options.alpn;
        for (const auto& name : d.alpnNames) {
            d.alpnList.push_back(name.c_str());
        }
        d.alpnList.push_back(nullptr);
        rc = mbedtls_ssl_conf_alpn_protocols(&d.config, d.alpnList.data());
        if (rc != 0) {
            fail(rc, "ALPN list");
            return false;
        }
    }
    if (!options.psk.empty() || !options.pskIdentity.empty()) {
        rc = mbedtls_ssl_conf_psk(&d.config, bytesOf(options.psk), options.psk.size(),
                                  bytesOf(options.pskIdentity), options.pskIdentity.size());
        if (rc != 0) {
            fail(rc, "PSK");
            return false;
        }
    }

    rc = mbedtls_ssl_setup(&d.ssl, &d.config);
    if (rc != 0) {
        fail(rc, "ssl_setup");
        return false;
    }
    if (!options.serverName.empty()) {
        rc = mbedtls_ssl_set_hostname(&d.ssl, options.serverName.c_str());
        if (rc != 0) {
            fail(rc, "set_hostname");
            return false;
        }
    }
    if (options.session) {
        rc = mbedtls_ssl_set_session(&d.ssl, &options.session->session);
        if (rc != 0) {
            fail(rc, "set_session");
            return false;
        }
    }
    mbedtls_ssl_set_bio(&d.ssl, &d, &Impl::bioSend, &Impl::bioReceive, nullptr);
    d.ready = true;
    return true;
}

bool TlsClient::handshakeUntil(Step step) {
    Impl& d = *impl_;
    if (!d.ready) {
        fail(1, "setup() first");
        return false;
    }
    const auto deadline = Clock::now() + d.timeout;
    d.readDeadline = deadline;
    d.stall = d.timeout;
    timedOut_ = false;
    for (;;) {
        // set_session() raises `resume`; the ServerHello clears it unless the
        // server echoed our session ID, so it counts only once that is read.
        if (d.ssl.handshake != nullptr && d.ssl.state > MBEDTLS_SSL_SERVER_HELLO) {
            resumed_ = d.ssl.handshake->resume != 0;
        }
        if (d.ssl.state == MBEDTLS_SSL_HANDSHAKE_OVER) {
            return true;
        }
        // The client's state names what it does next: at CLIENT_CERTIFICATE
        // it has read ServerHelloDone and sent nothing since its hello.
        if (step == Step::ServerHelloDone && d.ssl.state >= MBEDTLS_SSL_CLIENT_CERTIFICATE) {
            return true;
        }
        const int rc = mbedtls_ssl_handshake_step(&d.ssl);
        if (rc == 0) {
            continue;
        }
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
            if (Clock::now() >= deadline) {
                timedOut_ = true;
                fail(1, "the handshake timed out");
                return false;
            }
            continue;
        }
        if (rc == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) {
            alert_ = TlsClientAlert{d.ssl.in_msg[0], d.ssl.in_msg[1]};
        }
        timedOut_ = rc == MBEDTLS_ERR_SSL_TIMEOUT;
        fail(rc, "handshake");
        return false;
    }
}

void TlsClient::setTimeout(std::chrono::milliseconds timeout) noexcept {
    impl_->timeout = timeout;
}

bool TlsClient::handshake(int fd, const TlsClientOptions& options) {
    return setup(fd, options) && handshakeUntil(Step::Done);
}

std::string TlsClient::protocol() const {
    return mbedtls_ssl_get_version(&impl_->ssl);
}

std::string TlsClient::cipher() const {
    const char* name = mbedtls_ssl_get_ciphersuite(&impl_->ssl);
    return name != nullptr ? name : "";
}

std::string TlsClient::alpn() const {
    const char* name = mbedtls_ssl_get_alpn_protocol(&impl_->ssl);
    return name != nullptr ? name : "";
}

std::string TlsClient::serverCertificateSubject() const {
    const mbedtls_x509_crt* certificate = mbedtls_ssl_get_peer_cert(&impl_->ssl);
    return certificate != nullptr ? describeName(certificate->subject) : std::string();
}

std::string TlsClient::serverCertificateIssuer() const {
    const mbedtls_x509_crt* certificate = mbedtls_ssl_get_peer_cert(&impl_->ssl);
    return certificate != nullptr ? describeName(certificate->issuer) : std::string();
}

std::uint32_t TlsClient::verifyResult() const {
    return mbedtls_ssl_get_verify_result(&impl_->ssl);
}

std::shared_ptr<const TlsClientSession> TlsClient::saveSession() const {
    if (impl_->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        return nullptr;
    }
    auto saved = std::make_shared<TlsClientSession>();
    if (mbedtls_ssl_get_session(&impl_->ssl, &saved->session) != 0) {
        return nullptr;
    }
    return saved;
}

bool TlsClient::sendAlert(std::uint8_t level, std::uint8_t description) {
    impl_->stall = impl_->timeout;
    const int rc = mbedtls_ssl_send_alert_message(&impl_->ssl, level, description);
    if (rc != 0) {
        fail(rc, "send_alert_message");
    }
    return rc == 0;
}

bool TlsClient::sendCloseNotify() {
    impl_->stall = impl_->timeout;
    const int rc = mbedtls_ssl_close_notify(&impl_->ssl);
    if (rc != 0) {
        fail(rc, "close_notify");
    }
    return rc == 0;
}

bool TlsClient::sendRaw(std::string_view bytes) {
    impl_->stall = impl_->timeout;
    while (!bytes.empty()) {
        const int n = Impl::bioSend(impl_.get(), bytesOf(bytes), bytes.size());
        if (n < 0) {
            fail(n, "raw send");
            return false;
        }
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

bool TlsClient::send(std::string_view bytes, std::chrono::milliseconds stall) {
    Impl& d = *impl_;
    d.stall = stall;
    while (!bytes.empty()) {
        const int n = mbedtls_ssl_write(&d.ssl, bytesOf(bytes), bytes.size());
        if (n > 0) {
            bytes.remove_prefix(static_cast<std::size_t>(n));
            continue;
        }
        timedOut_ = n == MBEDTLS_ERR_SSL_TIMEOUT;
        fail(n, "write");
        return false;
    }
    return true;
}

ClientTransport::Status TlsClient::receive(std::string& out, Clock::time_point deadline) {
    if (closeNotify_) {
        return waitForTcpEof(deadline);
    }
    if (alert_) {
        return Status::Eof;
    }
    Impl& d = *impl_;
    bool got = false;
    d.readDeadline = deadline;
    for (;;) {
        const int n = mbedtls_ssl_read(&d.ssl, d.plaintext.data(), d.plaintext.size());
        if (n > 0) {
            out.append(reinterpret_cast<const char*>(d.plaintext.data()),
                       static_cast<std::size_t>(n));
            got = true;
            // Take what else is there, without waiting for more.
            d.readDeadline = Clock::time_point{};
            continue;
        }
        if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE) {
            if (got || Clock::now() >= deadline) {
                return got ? Status::Data : Status::Timeout;
            }
            continue;
        }
        if (n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
            closeNotify_ = true;
            return got ? Status::Data : waitForTcpEof(deadline);
        }
        if (got) {
            // The end comes with the next call.
            return Status::Data;
        }
        if (n == 0 || n == MBEDTLS_ERR_SSL_CONN_EOF) {
            // TCP ended without close_notify: the stream ends all the same.
            return Status::Eof;
        }
        if (n == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) {
            alert_ = TlsClientAlert{d.ssl.in_msg[0], d.ssl.in_msg[1]};
            return Status::Eof;
        }
        fail(n, "read");
        return Status::Reset;
    }
}

ClientTransport::Status TlsClient::waitForTcpEof(Clock::time_point deadline) {
    Impl& d = *impl_;
    for (;;) {
        if (d.stashTaken < d.stash.size()) {
            afterCloseNotify_.append(d.stash, d.stashTaken);
            d.stash.clear();
            d.stashTaken = 0;
        }
        if (d.tcpReset) {
            return Status::Reset;
        }
        if (d.tcpEof) {
            return Status::Eof;
        }
        pollfd p{d.fd, POLLIN, 0};
        const int rc = ::poll(&p, 1, remainingMs(deadline));
        if (rc < 0 && errno == EINTR) {
            continue;
        }
        if (rc <= 0) {
            return Status::Timeout;
        }
        d.stashReadable();
    }
}

void TlsClient::shutdownWrite() {
    if (impl_->ready) {
        sendCloseNotify();
        ::shutdown(impl_->fd, SHUT_WR);
    }
}

} // namespace wsgate::test
