#include "Tls.h"

#include <errno.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string_view>

namespace wsgate::bench {

namespace {

// As large as the plaintext read buffer: one recv() takes what a read
// event brings, up to many records.
constexpr std::size_t inputSize = 256 * 1024;

constexpr std::string_view personalization = "wsgate-bench-loadgen";

// Every server gets the same key exchange and cipher, so that case 6
// compares the servers and not their choices: ECDHE on P-256 (the curve of
// the benchmark's certificate, which every server has) and AES-128-GCM,
// with an ECDSA or an RSA certificate.
const int cipherSuites[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                            MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, 0};
const mbedtls_ecp_group_id curves[] = {MBEDTLS_ECP_DP_SECP256R1, MBEDTLS_ECP_DP_NONE};
// --tls-browser-offer: the TLS 1.2 ECDHE suites and the curves that current
// browsers offer, in their order; what the server takes is its choice.
const int browserCipherSuites[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                                   MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                                   MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                                   MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                                   MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                                   MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                                   0};
const mbedtls_ecp_group_id browserCurves[] = {MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1,
                                              MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_NONE};
const char* alpnProtocols[] = {"http/1.1", nullptr};

} // namespace

std::string tlsErrorText(int code) {
    char text[160];
    mbedtls_strerror(code, text, sizeof text);
    char withCode[200];
    std::snprintf(withCode, sizeof withCode, "%s (-0x%04x)", text, static_cast<unsigned>(-code));
    return withCode;
}

std::unique_ptr<TlsClientContext> TlsClientContext::create(bool resume, bool browserOffer) {
    std::unique_ptr<TlsClientContext> context(new TlsClientContext);
    context->resume_ = resume;
    mbedtls_entropy_init(&context->entropy_);
    mbedtls_ctr_drbg_init(&context->random_);
    mbedtls_ssl_config_init(&context->config_);

    int rc = mbedtls_ctr_drbg_seed(&context->random_, mbedtls_entropy_func, &context->entropy_,
                                   reinterpret_cast<const unsigned char*>(personalization.data()),
                                   personalization.size());
    if (rc != 0) {
        std::fprintf(stderr, "loadgen: mbedtls_ctr_drbg_seed: %s\n", tlsErrorText(rc).c_str());
        return nullptr;
    }
    mbedtls_ssl_config& config = context->config_;
    rc = mbedtls_ssl_config_defaults(&config, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                     MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) {
        std::fprintf(stderr, "loadgen: mbedtls_ssl_config_defaults: %s\n",
                     tlsErrorText(rc).c_str());
        return nullptr;
    }
    mbedtls_ssl_conf_rng(&config, mbedtls_ctr_drbg_random, &context->random_);
    // The benchmark's certificates are self-signed and made at run time.
    mbedtls_ssl_conf_authmode(&config, MBEDTLS_SSL_VERIFY_NONE);
    mbedtls_ssl_conf_min_version(&config, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(&config, browserOffer ? browserCipherSuites : cipherSuites);
    mbedtls_ssl_conf_curves(&config, browserOffer ? browserCurves : curves);
    // Offered whether or not sessions are resumed, as browsers do, so a full
    // handshake costs the server a ticket as it would in the field.
    mbedtls_ssl_conf_session_tickets(&config, MBEDTLS_SSL_SESSION_TICKETS_ENABLED);
    rc = mbedtls_ssl_conf_alpn_protocols(&config, alpnProtocols);
    if (rc != 0) {
        std::fprintf(stderr, "loadgen: mbedtls_ssl_conf_alpn_protocols: %s\n",
                     tlsErrorText(rc).c_str());
        return nullptr;
    }
    context->input_ = std::make_unique_for_overwrite<std::uint8_t[]>(inputSize);
    return context;
}

TlsClientContext::~TlsClientContext() {
    mbedtls_ssl_config_free(&config_);
    mbedtls_ctr_drbg_free(&random_);
    mbedtls_entropy_free(&entropy_);
}

std::unique_ptr<TlsClient> TlsClient::create(TlsClientContext& context) {
    std::unique_ptr<TlsClient> client(new TlsClient(context));
    mbedtls_ssl_init(&client->ssl_);
    mbedtls_ssl_session_init(&client->saved_);
    int rc = mbedtls_ssl_setup(&client->ssl_, &context.config_);
    if (rc == 0) {
        // SNI as a browser would send it for the test certificate's name.
        rc = mbedtls_ssl_set_hostname(&client->ssl_, "localhost");
    }
    if (rc != 0) {
        std::fprintf(stderr, "loadgen: TLS session setup: %s\n", tlsErrorText(rc).c_str());
        return nullptr;
    }
    mbedtls_ssl_set_bio(&client->ssl_, client.get(), &TlsClient::sendCallback,
                        &TlsClient::recvCallback, nullptr);
    return client;
}

TlsClient::~TlsClient() {
    detach();
    mbedtls_ssl_free(&ssl_);
    mbedtls_ssl_session_free(&saved_);
}

int TlsClient::begin(int fd) {
    detach();
    fd_ = fd;
    socketError_ = 0;
    resumed_ = false;
    sawCertificate_ = false;
    drained_ = false;
    peerClosed_ = false;
    if (used_) {
        // Keeps the record buffers, the hostname and the callbacks.
        int rc = mbedtls_ssl_session_reset(&ssl_);
        if (rc != 0) {
            return rc;
        }
    }
    used_ = true;
    if (context_.resume_ && haveSaved_) {
        return mbedtls_ssl_set_session(&ssl_, &saved_);
    }
    return 0;
}

void TlsClient::detach() {
    if (context_.inputOwner_ == this) {
        context_.inputOwner_ = nullptr;
        context_.inputBegin_ = context_.inputEnd_ = 0;
    }
    fd_ = -1;
}

int TlsClient::handshake() {
    // Stepping by hand shows the path taken: a resumed session goes from
    // the ServerHello straight to the server's ChangeCipherSpec, without
    // the server's certificate.
    while (ssl_.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        int rc = mbedtls_ssl_handshake_step(&ssl_);
        if (ssl_.state == MBEDTLS_SSL_SERVER_CERTIFICATE) {
            sawCertificate_ = true;
        }
        if (rc != 0) {
            return rc;
        }
    }
    resumed_ = !sawCertificate_;
    if (context_.resume_) {
        // The server may have issued a new ticket; keep the latest.
        haveSaved_ = mbedtls_ssl_get_session(&ssl_, &saved_) == 0;
    }
    return 0;
}

int TlsClient::read(std::uint8_t* data, std::size_t length) {
    return mbedtls_ssl_read(&ssl_, data, length);
}

int TlsClient::write(const std::uint8_t* data, std::size_t length) {
    // Our send callback never blocks, so each call takes a whole record's
    // worth (16 KiB at most) and only a real error stops the loop.
    while (length > 0) {
        int n = mbedtls_ssl_write(&ssl_, data, length);
        if (n < 0) {
            return n;
        }
        data += n;
        length -= static_cast<std::size_t>(n);
    }
    return 0;
}

void TlsClient::closeNotify() {
    mbedtls_ssl_close_notify(&ssl_);
}

int TlsClient::sendCallback(void* self, const unsigned char* data, std::size_t length) {
    auto* client = static_cast<TlsClient*>(self);
    client->context_.output_.append(data, length);
    return static_cast<int>(length);
}

int TlsClient::recvCallback(void* self, unsigned char* data, std::size_t length) {
    auto* client = static_cast<TlsClient*>(self);
    TlsClientContext& context = client->context_;
    if (context.inputOwner_ != client || context.inputBegin_ == context.inputEnd_) {
        // A short read emptied the socket; the next arrival raises a new edge.
        if (client->drained_) {
            return MBEDTLS_ERR_SSL_WANT_READ;
        }
        ssize_t n;
        do {
            n = ::recv(client->fd_, context.input_.get(), inputSize, 0);
        } while (n < 0 && errno == EINTR);
        if (n == 0) {
            return 0; // mbedTLS reports MBEDTLS_ERR_SSL_CONN_EOF
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                client->drained_ = true;
                return MBEDTLS_ERR_SSL_WANT_READ;
            }
            client->socketError_ = errno;
            return MBEDTLS_ERR_NET_RECV_FAILED;
        }
        context.inputOwner_ = client;
        context.inputBegin_ = 0;
        context.inputEnd_ = static_cast<std::size_t>(n);
        // With the FIN seen, read on until recv() returns 0 to report it.
        if (static_cast<std::size_t>(n) < inputSize && !client->peerClosed_) {
            client->drained_ = true;
        }
    }
    std::size_t take = std::min(length, context.inputEnd_ - context.inputBegin_);
    std::memcpy(data, context.input_.get() + context.inputBegin_, take);
    context.inputBegin_ += take;
    return static_cast<int>(take);
}

} // namespace wsgate::bench
