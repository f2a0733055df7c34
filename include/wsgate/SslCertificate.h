// What a client's certificate says.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace wsgate {

/// The parts of a client certificate an application looks at (a subset of
/// QSslCertificate).
struct SslCertificate {
    std::string subject; ///< "CN=client, O=wsgate".
    std::string issuer;
    std::string serialNumber;                 ///< Hex bytes separated by colons.
    std::chrono::sys_seconds effectiveDate{}; ///< notBefore.
    std::chrono::sys_seconds expiryDate{};    ///< notAfter.
    std::vector<std::uint8_t> der;            ///< The whole certificate, DER encoded.
};

} // namespace wsgate
