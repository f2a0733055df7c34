// The load generator's wss:// client: mbedTLS 2.28 (TLS 1.2) over the
// non-blocking sockets of the epoll loop.
//
// mbedTLS never touches a socket for writing: its records are gathered in
// one buffer shared by all connections (TlsClientContext::output()) and the
// loop sends them with the same send path and queue as plain ws:// bytes,
// so one call that writes several records costs one send(). Reads go
// through one shared receive buffer too: a single recv() takes everything
// the socket holds and mbedTLS is served from it, instead of one recv() for
// each record header and another for its body.
#pragma once

#include "Protocol.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace wsgate::bench {

class TlsClient;

// What every connection shares: the random generator, the configuration
// and the two buffers. One per load generator, on its one thread.
class TlsClientContext {
public:
    // Returns nothing and prints why when mbedTLS cannot be set up.
    static std::unique_ptr<TlsClientContext> create(bool resume, bool browserOffer);
    ~TlsClientContext();
    TlsClientContext(const TlsClientContext&) = delete;
    TlsClientContext& operator=(const TlsClientContext&) = delete;

    // Ciphertext that the last mbedTLS call produced, to be sent and cleared.
    ByteBuffer& output() { return output_; }

private:
    friend class TlsClient;
    TlsClientContext() = default;

    bool resume_ = false;
    mbedtls_entropy_context entropy_;
    mbedtls_ctr_drbg_context random_;
    mbedtls_ssl_config config_;
    ByteBuffer output_;
    // Bytes received but not yet taken by mbedTLS, owned by one connection.
    std::unique_ptr<std::uint8_t[]> input_;
    std::size_t inputBegin_ = 0;
    std::size_t inputEnd_ = 0;
    const TlsClient* inputOwner_ = nullptr;
};

// One connection's TLS session. Kept across the connections of one slot
// (handshakes mode) and reset for each, so its record buffers are
// allocated once.
class TlsClient {
public:
    // Returns nothing and prints why when mbedtls_ssl_setup fails.
    static std::unique_ptr<TlsClient> create(TlsClientContext& context);
    ~TlsClient();
    TlsClient(const TlsClient&) = delete;
    TlsClient& operator=(const TlsClient&) = delete;

    // Prepares for a new connection on fd: a fresh session, or the saved
    // one when resuming. Returns an mbedTLS error, or 0.
    int begin(int fd);
    // The connection is gone: let go of the shared receive buffer.
    void detach();

    // Before reading on an event: whether the peer's FIN has been seen
    // decides whether a short read may be trusted to have drained the socket.
    void beginEvent(bool peerClosed) {
        drained_ = false;
        peerClosed_ = peerClosed;
    }

    // 0 once the handshake is complete, MBEDTLS_ERR_SSL_WANT_READ while
    // waiting for the server, another mbedTLS error on failure.
    int handshake();
    bool handshakeDone() const { return ssl_.state == MBEDTLS_SSL_HANDSHAKE_OVER; }
    // Whether the completed handshake resumed a saved session.
    bool resumed() const { return resumed_; }

    // mbedtls_ssl_read: bytes, MBEDTLS_ERR_SSL_WANT_READ, 0 or
    // MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY at the end, or an error.
    int read(std::uint8_t* data, std::size_t length);
    // Encrypts all of it into the context's output; 0 or an mbedTLS error.
    int write(const std::uint8_t* data, std::size_t length);
    // Queues a close_notify alert in the context's output.
    void closeNotify();

    const char* cipherSuite() const { return mbedtls_ssl_get_ciphersuite(&ssl_); }
    const char* alpn() const { return mbedtls_ssl_get_alpn_protocol(&ssl_); }
    // The socket error behind MBEDTLS_ERR_NET_*, else 0.
    int socketError() const { return socketError_; }

private:
    explicit TlsClient(TlsClientContext& context) : context_(context) {}
    static int sendCallback(void* self, const unsigned char* data, std::size_t length);
    static int recvCallback(void* self, unsigned char* data, std::size_t length);

    TlsClientContext& context_;
    mbedtls_ssl_context ssl_;
    mbedtls_ssl_session saved_;
    bool haveSaved_ = false;
    bool used_ = false;
    bool resumed_ = false;
    bool sawCertificate_ = false;
    bool drained_ = false;
    bool peerClosed_ = false;
    int fd_ = -1;
    int socketError_ = 0;
};

// mbedtls_strerror's text for a code, with the code itself.
std::string tlsErrorText(int code);

} // namespace wsgate::bench
