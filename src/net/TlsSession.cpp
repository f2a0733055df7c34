#include "net/TlsSession.h"

#include <mbedtls/platform_util.h>
#include <mbedtls/ssl_internal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

namespace wsgate::net {

namespace {

// TLS record content types (RFC 5246 §6.2.1).
constexpr std::uint8_t recordChangeCipherSpec = 20;
constexpr std::uint8_t recordAlert = 21;
constexpr std::size_t recordHeaderSize = 5;

// Without a plaintext buffer to borrow (a nested call), one record's worth
// is allocated for the call.
constexpr std::size_t fallbackPlaintextSize = std::size_t{16} * 1024;

using Code = TlsVerifyError::Code;

bool isSelfSigned(const mbedtls_x509_crt& certificate) noexcept {
    return certificate.subject_raw.len == certificate.issuer_raw.len &&
           std::memcmp(certificate.subject_raw.p, certificate.issuer_raw.p,
                       certificate.subject_raw.len) == 0;
}

Code codeFor(std::uint32_t flag, int depth, bool selfSigned) noexcept {
    switch (flag) {
    case MBEDTLS_X509_BADCERT_EXPIRED:
        return Code::CertificateExpired;
    case MBEDTLS_X509_BADCERT_FUTURE:
        return Code::CertificateNotYetValid;
    case MBEDTLS_X509_BADCERT_REVOKED:
        return Code::CertificateRevoked;
    case MBEDTLS_X509_BADCERT_MISSING:
        return Code::NoPeerCertificate;
    case MBEDTLS_X509_BADCERT_KEY_USAGE:
    case MBEDTLS_X509_BADCERT_EXT_KEY_USAGE:
    case MBEDTLS_X509_BADCERT_NS_CERT_TYPE:
        return Code::InvalidPurpose;
    case MBEDTLS_X509_BADCERT_NOT_TRUSTED:
        if (selfSigned) {
            return depth == 0 ? Code::SelfSignedCertificate : Code::SelfSignedCertificateInChain;
        }
        return Code::UnableToGetLocalIssuerCertificate;
    default:
        return Code::CertificateRejected;
    }
}

std::chrono::sys_seconds toSysSeconds(const mbedtls_x509_time& time) noexcept {
    using namespace std::chrono;
    const year_month_day date{year{time.year}, month{static_cast<unsigned>(time.mon)},
                              day{static_cast<unsigned>(time.day)}};
    if (!date.ok()) {
        return sys_seconds{};
    }
    return sys_days{date} + hours{time.hour} + minutes{time.min} + seconds{time.sec};
}

} // namespace

std::string_view TlsVerifyError::describe(Code code) noexcept {
    switch (code) {
    case Code::UnableToGetLocalIssuerCertificate:
        return "The issuer certificate of a locally looked up certificate could not be found";
    case Code::SelfSignedCertificate:
        return "The certificate is self-signed, and untrusted";
    case Code::SelfSignedCertificateInChain:
        return "The root certificate of the certificate chain is self-signed, and untrusted";
    case Code::CertificateNotYetValid:
        return "The certificate is not yet valid";
    case Code::CertificateExpired:
        return "The certificate has expired";
    case Code::CertificateRevoked:
        return "The certificate has been revoked";
    case Code::InvalidPurpose:
        return "The certificate is invalid for the specified purpose";
    case Code::PathLengthExceeded:
        return "The certificate chain is longer than the peer verify depth";
    case Code::NoPeerCertificate:
        return "The peer did not present any certificate";
    case Code::CertificateRejected:
        return "The certificate was rejected";
    }
    return "Unknown certificate error";
}

template <typename OnAlert>
void TlsSession::RecordScanner::scan(const std::uint8_t* data, std::size_t size,
                                     OnAlert&& onAlert) {
    while (size > 0) {
        if (headerSize < recordHeaderSize) {
            const std::size_t take = std::min(recordHeaderSize - headerSize, size);
            std::memcpy(header + headerSize, data, take);
            headerSize = static_cast<std::uint8_t>(headerSize + take);
            data += take;
            size -= take;
            if (headerSize < recordHeaderSize) {
                return;
            }
            bodyLeft = static_cast<std::uint16_t>((header[3] << 8) | header[4]);
            bodyRead = 0;
        } else {
            const std::size_t take = std::min<std::size_t>(bodyLeft, size);
            for (std::size_t i = 0; i < take && bodyRead + i < sizeof alert; ++i) {
                alert[bodyRead + i] = data[i];
            }
            bodyRead = static_cast<std::uint16_t>(bodyRead + take);
            bodyLeft = static_cast<std::uint16_t>(bodyLeft - take);
            data += take;
            size -= take;
        }
        if (bodyLeft != 0) {
            continue;
        }
        // A whole record went by.
        if (header[0] == recordChangeCipherSpec) {
            encrypted = true;
        } else if (header[0] == recordAlert) {
            if (!encrypted && bodyRead == sizeof alert) {
                onAlert(TlsAlert{alert[0], alert[1]}, false);
            } else {
                onAlert(TlsAlert{}, true);
            }
        }
        headerSize = 0;
    }
}

struct TlsSession::Guard {
    explicit Guard(TlsSession& session) noexcept : session_(session), outer_(session.destroyed_) {
        session.destroyed_ = &destroyed;
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard() {
        if (!destroyed) {
            session_.destroyed_ = outer_;
        } else if (outer_ != nullptr) {
            *outer_ = true;
        }
    }
    bool destroyed = false;

private:
    TlsSession& session_;
    bool* outer_;
};

struct TlsSession::MbedtlsCall {
    explicit MbedtlsCall(TlsSession& session) noexcept : session_(session) {
        session.busy_ = true;
        session.context_.activeSession_ = &session;
    }
    MbedtlsCall(const MbedtlsCall&) = delete;
    MbedtlsCall& operator=(const MbedtlsCall&) = delete;
    ~MbedtlsCall() {
        session_.busy_ = false;
        session_.context_.activeSession_ = nullptr;
    }

private:
    TlsSession& session_;
};

TlsSession::TlsSession(TlsContext& context, Handler& handler) noexcept
    : context_(context), handler_(handler) {
    mbedtls_ssl_init(&ssl_);
}

TlsSession::~TlsSession() {
    if (destroyed_ != nullptr) {
        *destroyed_ = true;
    }
    context_.returnPlaintextBuffer(this);
    context_.returnOutputBuffer(this);
    if (context_.activeSession_ == this) {
        context_.activeSession_ = nullptr;
    }
    mbedtls_ssl_free(&ssl_);
}

bool TlsSession::setUp() {
    // The record buffers (16 KiB each way in Debian's build) are allocated
    // here, on the first bytes, rather than when the socket is accepted.
    const int rc = mbedtls_ssl_setup(&ssl_, &context_.config_);
    if (rc != 0) {
        fail(rc, true);
        return false;
    }
    // p_bio is how the SNI and PSK callbacks, which get only the ssl
    // context, find the session.
    mbedtls_ssl_set_bio(&ssl_, this, &TlsSession::onBioSend, &TlsSession::onBioReceive, nullptr);
    if (context_.verifyMode_ != SslConfiguration::PeerVerifyMode::VerifyNone) {
        mbedtls_ssl_set_verify(&ssl_, &TlsSession::onVerify, this);
    }
    setUp_ = true;
    return true;
}

void TlsSession::receive(const std::uint8_t* ciphertext, std::size_t size) {
    // Called from one of its own callbacks, it would overwrite the input
    // still being read.
    assert(inputLeft_ == 0 && "TlsSession::receive() is not re-entrant");
    if (failed_ || closeNotifyReceived_ || busy_ || size == 0 || inputLeft_ != 0) {
        return;
    }
    if (!setUp_ && !setUp()) {
        return;
    }
    Guard guard(*this);
    input_ = ciphertext;
    inputLeft_ = size;
    if (!handshakeDone_) {
        continueHandshake();
        if (guard.destroyed) {
            return;
        }
    }
    if (handshakeDone_ && !failed_ && inputLeft_ > 0) {
        readApplicationData();
        if (guard.destroyed) {
            return;
        }
    }
    input_ = nullptr;
    inputLeft_ = 0;
}

void TlsSession::continueHandshake() {
    beginOutput();
    int rc = 0;
    for (;;) {
        const std::size_t leftBefore = inputLeft_;
        {
            MbedtlsCall call(*this);
            rc = mbedtls_ssl_handshake(&ssl_);
        }
        resolveReceivedAlert(rc);
        // WANT_READ means "no whole record left" except after an alert that
        // mbedTLS skipped; then there is more to read.
        if (rc != MBEDTLS_ERR_SSL_WANT_READ || inputLeft_ == 0 || inputLeft_ == leftBefore) {
            break;
        }
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_READ) {
        endOutput();
        reportAlerts();
        return;
    }
    if (rc != 0) {
        // mbedTLS says nothing when no curve of ours was offered (it does
        // when no suite was); the client should learn why, not just see EOF.
        if (rc == MBEDTLS_ERR_SSL_NO_CIPHER_CHOSEN && !sentFatalAlert()) {
            sendAlert(TlsAlert::fatal, MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE);
        }
        fail(rc, true);
        return;
    }
    // Our Finished goes out before anything the handler does next.
    endOutput();
    Guard guard(*this);
    if (!reportAlerts()) {
        return;
    }
    finishHandshake();
}

void TlsSession::finishHandshake() {
    Guard guard(*this);
    const auto mode = context_.verifyMode_;
    if (mode != SslConfiguration::PeerVerifyMode::VerifyNone) {
        // Problems that mbedTLS found outside the verify callback: a missing
        // certificate, key usage, and everything on a resumed session,
        // whose verification result comes from the ticket.
        std::uint32_t seen = 0;
        for (const TlsVerifyError& error : verifyErrors_) {
            seen |= error.mbedtlsFlag;
        }
        const std::uint32_t extra = mbedtls_ssl_get_verify_result(&ssl_) & ~seen &
                                    ~std::uint32_t{MBEDTLS_X509_BADCERT_SKIP_VERIFY};
        if (extra != 0) {
            const mbedtls_x509_crt* peer = mbedtls_ssl_get_peer_cert(&ssl_);
            const bool goOn = recordVerifyErrors(peer, peer != nullptr ? 0 : -1, extra);
            if (guard.destroyed) {
                return;
            }
            if (!goOn) {
                refuseCertificate(peer == nullptr);
                return;
            }
        }
        if (mode == SslConfiguration::PeerVerifyMode::VerifyPeer && !verifyErrors_.empty()) {
            const bool ignore = handler_.onTlsSslErrors(verifyErrors_);
            if (guard.destroyed) {
                return;
            }
            if (!ignore) {
                refuseCertificate(mbedtls_ssl_get_peer_cert(&ssl_) == nullptr);
                return;
            }
        }
    }
    handshakeDone_ = true;
    handler_.onTlsHandshakeDone();
}

void TlsSession::refuseCertificate(bool noCertificate) {
    // TLS 1.2 has no certificate_required; handshake_failure is what other
    // servers send for a missing certificate.
    beginOutput();
    sendAlert(TlsAlert::fatal, noCertificate ? MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE
                                             : MBEDTLS_SSL_ALERT_MSG_BAD_CERT);
    fail(noCertificate ? MBEDTLS_ERR_SSL_NO_CLIENT_CERTIFICATE
                       : MBEDTLS_ERR_X509_CERT_VERIFY_FAILED,
         true);
}

void TlsSession::sendAlert(std::uint8_t level, std::uint8_t description) {
    ownAlert_ = true;
    int rc = 0;
    {
        MbedtlsCall call(*this);
        rc = mbedtls_ssl_send_alert_message(&ssl_, level, description);
    }
    ownAlert_ = false;
    if (rc == 0) {
        alertsSent_.push(TlsAlert{level, description});
    }
}

bool TlsSession::sentFatalAlert() const noexcept {
    for (std::uint8_t i = 0; i < alertsSent_.size; ++i) {
        if (alertsSent_.items[i].level == TlsAlert::fatal) {
            return true;
        }
    }
    return false;
}

void TlsSession::readApplicationData() {
    Guard guard(*this);
    std::uint8_t* buffer = context_.borrowPlaintextBuffer(this);
    std::size_t capacity = TlsContext::plaintextBufferSize;
    std::unique_ptr<std::uint8_t[]> ownBuffer;
    if (buffer == nullptr) {
        capacity = fallbackPlaintextSize;
        ownBuffer.reset(new (std::nothrow) std::uint8_t[capacity]);
        buffer = ownBuffer.get();
        if (buffer == nullptr) {
            fail(MBEDTLS_ERR_SSL_ALLOC_FAILED, false);
            return;
        }
    }
    std::size_t used = 0;
    beginOutput();
    for (;;) {
        int rc = 0;
        const std::size_t leftBefore = inputLeft_;
        {
            MbedtlsCall call(*this);
            rc = mbedtls_ssl_read(&ssl_, buffer + used, capacity - used);
        }
        resolveReceivedAlert(rc);
        if (rc > 0) {
            used += static_cast<std::size_t>(rc);
            if (used < capacity) {
                continue;
            }
        } else if (rc == MBEDTLS_ERR_SSL_WANT_READ && inputLeft_ != 0 && inputLeft_ < leftBefore) {
            // mbedTLS 2.28 returns WANT_READ after skipping a warning alert
            // (no_renegotiation), with records still to read.
            continue;
        }
        // The buffer is full or the input ran out: hand on what there is.
        endOutput();
        if (used > 0) {
            handler_.onTlsPlaintext(buffer, used);
            if (guard.destroyed) {
                return;
            }
            used = 0;
        }
        if (!reportAlerts()) {
            return;
        }
        if (failed_ || closeNotifyReceived_) {
            break;
        }
        if (rc > 0) {
            beginOutput();
            continue;
        }
        if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
            closeNotifyReceived_ = true;
            handler_.onTlsCloseNotify();
            if (guard.destroyed) {
                return;
            }
        } else if (rc != MBEDTLS_ERR_SSL_WANT_READ && rc != 0) {
            fail(rc, false);
            if (guard.destroyed) {
                return;
            }
        }
        break;
    }
    context_.returnPlaintextBuffer(this);
}

bool TlsSession::send(const std::uint8_t* plaintext, std::size_t size) {
    if (!handshakeDone_ || failed_ || closeNotifySent_ || busy_) {
        return false;
    }
    beginOutput();
    while (size > 0) {
        int rc = 0;
        {
            MbedtlsCall call(*this);
            rc = mbedtls_ssl_write(&ssl_, plaintext, size);
        }
        if (rc < 0) {
            // The records written so far are whole and in order; they go out.
            failed_ = true;
            lastError_ = rc;
            endOutput();
            return false;
        }
        plaintext += rc;
        size -= static_cast<std::size_t>(rc);
    }
    endOutput();
    return true;
}

namespace {

/// Releases the whole pages of [buffer + keep, buffer + size); their bytes.
std::size_t releasePages(unsigned char* buffer, std::size_t size, std::size_t keep) noexcept {
    static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto start = reinterpret_cast<std::uintptr_t>(buffer);
    const std::uintptr_t begin = (start + keep + page - 1) / page * page;
    const std::uintptr_t end = (start + size) / page * page;
    if (buffer == nullptr || end <= begin ||
        ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED) != 0) {
        return 0;
    }
    return end - begin;
}

} // namespace

std::size_t TlsSession::releaseIdleMemory() noexcept {
    // A record being read (in_left), decrypted data not yet taken (in_offt,
    // in_msglen) or a record not yet sent (out_left) lives in the buffers.
    if (!handshakeDone_ || failed_ || busy_ || ssl_.in_left != 0 || ssl_.in_offt != nullptr ||
        ssl_.in_msglen != 0 || ssl_.out_left != 0 || ssl_.keep_current_message != 0) {
        return 0;
    }
    // TLS keeps the incoming record counter in the input buffer's first 8
    // bytes, then the 5-byte header and the explicit IV; 64 covers them.
    constexpr std::size_t keep = 64;
    return releasePages(ssl_.in_buf, MBEDTLS_SSL_IN_BUFFER_LEN, keep) +
           releasePages(ssl_.out_buf, MBEDTLS_SSL_OUT_BUFFER_LEN, keep);
}

void TlsSession::sendCloseNotify() {
    if (!setUp_ || !handshakeDone_ || closeNotifySent_ || failed_ || busy_) {
        return;
    }
    closeNotifySent_ = true;
    beginOutput();
    // What mbedtls_ssl_close_notify sends once the handshake is over.
    sendAlert(TlsAlert::warning, MBEDTLS_SSL_ALERT_MSG_CLOSE_NOTIFY);
    endOutput();
    reportAlerts();
}

void TlsSession::fail(int mbedtlsError, bool duringHandshake) {
    failed_ = true;
    lastError_ = mbedtlsError;
    endOutput();
    Guard guard(*this);
    if (!reportAlerts()) {
        return;
    }
    handler_.onTlsError(mbedtlsError, duringHandshake);
}

bool TlsSession::reportAlerts() {
    Guard guard(*this);
    // Taken out first: a handler may cause more alerts.
    const AlertQueue received = std::exchange(alertsReceived_, AlertQueue{});
    const AlertQueue sent = std::exchange(alertsSent_, AlertQueue{});
    for (std::uint8_t i = 0; i < received.size; ++i) {
        handler_.onTlsAlertReceived(received.items[i]);
        if (guard.destroyed) {
            return false;
        }
    }
    for (std::uint8_t i = 0; i < sent.size; ++i) {
        handler_.onTlsAlertSent(sent.items[i]);
        if (guard.destroyed) {
            return false;
        }
    }
    return true;
}

void TlsSession::resolveReceivedAlert(int mbedtlsResult) noexcept {
    if (!encryptedAlertIn_) {
        return;
    }
    encryptedAlertIn_ = false;
    // After a fatal alert or close_notify, or once mbedTLS has moved on
    // past a warning, in_msg still holds the decrypted alert. After any
    // other failure it may not have been decrypted at all.
    const bool processed = mbedtlsResult == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE ||
                           mbedtlsResult == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY ||
                           mbedtlsResult == MBEDTLS_ERR_SSL_WANT_READ || mbedtlsResult >= 0;
    if (processed && ssl_.in_msgtype == MBEDTLS_SSL_MSG_ALERT && ssl_.in_msg != nullptr) {
        alertsReceived_.push(TlsAlert{ssl_.in_msg[0], ssl_.in_msg[1]});
    }
}

void TlsSession::beginOutput() noexcept {
    if (!gathering_) {
        gathering_ = context_.borrowOutputBuffer(this);
    }
}

void TlsSession::endOutput() {
    if (!gathering_) {
        return;
    }
    if (!context_.output_.empty()) {
        // The handler may not re-enter while it holds the shared buffer.
        const bool wasBusy = busy_;
        busy_ = true;
        handler_.onTlsOutput(context_.output_.data(), context_.output_.size());
        busy_ = wasBusy;
    }
    context_.returnOutputBuffer(this);
    gathering_ = false;
}

int TlsSession::onBioSend(void* self, const unsigned char* data, std::size_t size) noexcept {
    auto* session = static_cast<TlsSession*>(self);
    session->outScanner_.scan(data, size, [session](TlsAlert alert, bool /*encrypted*/) {
        // Our own alerts are reported with what we know of them; mbedTLS's
        // are read off the wire, which hides them once encryption is on.
        if (!session->ownAlert_) {
            session->alertsSent_.push(alert);
        }
    });
    if (!session->gathering_) {
        session->handler_.onTlsOutput(data, size);
        return static_cast<int>(size);
    }
    auto& output = session->context_.output_;
    output.insert(output.end(), data, data + size);
    if (output.size() >= TlsContext::outputFlushThreshold) {
        session->handler_.onTlsOutput(output.data(), output.size());
        output.clear();
    }
    return static_cast<int>(size);
}

int TlsSession::onBioReceive(void* self, unsigned char* data, std::size_t size) noexcept {
    auto* session = static_cast<TlsSession*>(self);
    // mbedTLS asks for the next record only after handling the last one, so
    // an encrypted alert read before is decrypted in in_msg by now.
    session->resolveReceivedAlert(0);
    if (session->inputLeft_ == 0) {
        return MBEDTLS_ERR_SSL_WANT_READ;
    }
    const std::size_t take = std::min(size, session->inputLeft_);
    std::memcpy(data, session->input_, take);
    session->input_ += take;
    session->inputLeft_ -= take;
    session->inScanner_.scan(data, take, [session](TlsAlert alert, bool encrypted) {
        if (encrypted) {
            session->encryptedAlertIn_ = true;
        } else {
            session->alertsReceived_.push(alert);
        }
    });
    return static_cast<int>(take);
}

int TlsSession::onVerify(void* self, mbedtls_x509_crt* certificate, int depth,
                         std::uint32_t* flags) noexcept {
    auto* session = static_cast<TlsSession*>(self);
    const std::uint32_t found = *flags;
    const int maxDepth = session->context_.verifyDepth_;
    if (maxDepth > 0 && depth >= maxDepth) {
        // wsgate's own check; mbedTLS sees it as "other" so that the
        // verification fails there too.
        *flags |= MBEDTLS_X509_BADCERT_OTHER;
        if (!session->addVerifyError(TlsVerifyError{Code::PathLengthExceeded,
                                                    MBEDTLS_X509_BADCERT_OTHER, depth,
                                                    distinguishedName(certificate->subject)})) {
            return MBEDTLS_ERR_X509_FATAL_ERROR;
        }
    }
    if (!session->recordVerifyErrors(certificate, depth, found)) {
        // mbedTLS stops the handshake with an access_denied alert.
        return MBEDTLS_ERR_X509_FATAL_ERROR;
    }
    return 0;
}

bool TlsSession::recordVerifyErrors(const mbedtls_x509_crt* certificate, int depth,
                                    std::uint32_t flags) {
    flags &= ~std::uint32_t{MBEDTLS_X509_BADCERT_SKIP_VERIFY};
    if (flags == 0) {
        return true;
    }
    const bool selfSigned = certificate != nullptr && isSelfSigned(*certificate);
    const std::string subject =
        certificate != nullptr ? distinguishedName(certificate->subject) : std::string();
    for (std::uint32_t bit = 1; bit != 0 && bit <= flags; bit <<= 1) {
        if ((flags & bit) == 0) {
            continue;
        }
        const Code code = codeFor(bit, depth, selfSigned);
        if (!addVerifyError(
                TlsVerifyError{code, bit, depth, code == Code::NoPeerCertificate ? "" : subject})) {
            return false;
        }
    }
    return true;
}

bool TlsSession::addVerifyError(TlsVerifyError error) {
    verifyErrors_.push_back(std::move(error));
    // QueryPeer keeps the problems for the application to read, silently.
    if (context_.verifyMode_ != SslConfiguration::PeerVerifyMode::VerifyPeer) {
        return true;
    }
    // A copy: the handler may look at peerVerifyErrors(), which may grow.
    const TlsVerifyError last = verifyErrors_.back();
    handler_.onTlsPeerVerifyError(last);
    if (context_.interruptOnError_ && !handler_.onTlsHandshakeInterruptedOnError(last)) {
        interrupted_ = true;
        return false;
    }
    return true;
}

std::string_view TlsSession::protocolVersion() const noexcept {
    return handshakeDone_ ? std::string_view(mbedtls_ssl_get_version(&ssl_)) : std::string_view();
}

std::string_view TlsSession::cipherSuite() const noexcept {
    if (!handshakeDone_) {
        return {};
    }
    const char* name = mbedtls_ssl_get_ciphersuite(&ssl_);
    return name != nullptr ? std::string_view(name) : std::string_view();
}

std::string_view TlsSession::alpnProtocol() const noexcept {
    if (!handshakeDone_) {
        return {};
    }
    const char* name = mbedtls_ssl_get_alpn_protocol(&ssl_);
    return name != nullptr ? std::string_view(name) : std::string_view();
}

std::optional<TlsPeerCertificate> TlsSession::peerCertificate() const {
    if (!setUp_) {
        return std::nullopt;
    }
    const mbedtls_x509_crt* certificate = mbedtls_ssl_get_peer_cert(&ssl_);
    if (certificate == nullptr) {
        return std::nullopt;
    }
    TlsPeerCertificate out;
    out.subject = distinguishedName(certificate->subject);
    out.issuer = distinguishedName(certificate->issuer);
    char serial[128];
    const int rc = mbedtls_x509_serial_gets(serial, sizeof serial, &certificate->serial);
    if (rc > 0) {
        out.serialNumber.assign(serial, static_cast<std::size_t>(rc));
    }
    out.notBefore = toSysSeconds(certificate->valid_from);
    out.notAfter = toSysSeconds(certificate->valid_to);
    out.der.assign(certificate->raw.p, certificate->raw.p + certificate->raw.len);
    return out;
}

std::uint32_t TlsSession::peerVerifyFlags() const noexcept {
    if (!setUp_ || context_.verifyMode_ == SslConfiguration::PeerVerifyMode::VerifyNone ||
        (!handshakeDone_ && !failed_)) {
        return 0;
    }
    const std::uint32_t flags = mbedtls_ssl_get_verify_result(&ssl_);
    return flags == 0xFFFFFFFFU ? 0 : flags & ~std::uint32_t{MBEDTLS_X509_BADCERT_SKIP_VERIFY};
}

} // namespace wsgate::net
