// Certificates and keys for TLS tests, made at test time with mbedTLS's
// x509write API: nothing secret or expiring is committed.
#pragma once

#include <string>

namespace wsgate::test {

/// A certificate (or chain, the leaf first) and its private key, as PEM.
struct TestIdentity {
    std::string certificatePem;
    std::string privateKeyPem;
    std::string subject; ///< As mbedTLS prints it, e.g. "CN=localhost, O=wsgate test".
};

/// Every identity is issued by `caPem` unless said otherwise. Validity runs
/// from a day ago to a year ahead unless said otherwise.
struct TestCertificates {
    std::string caPem;      ///< Self-signed ECDSA P-256 root, "wsgate test CA".
    std::string otherCaPem; ///< A second, unrelated root.

    TestIdentity serverEcdsa;    ///< CN=localhost, ECDSA P-256.
    TestIdentity serverRsa;      ///< CN=localhost, RSA 2048.
    TestIdentity sniServer;      ///< CN=sni.example.com, ECDSA P-256.
    TestIdentity wildcardServer; ///< CN=*.example.net, ECDSA P-256.

    TestIdentity client;               ///< CN=client.
    TestIdentity clientExpired;        ///< CN=expired client; expired a month ago.
    TestIdentity clientOtherCa;        ///< CN=stranger, issued by otherCaPem.
    TestIdentity clientSelfSigned;     ///< CN=self-signed client, its own issuer.
    TestIdentity clientServerAuthOnly; ///< CN=server-auth-only, extendedKeyUsage serverAuth.
    /// CN=chained client, issued by an intermediate CA that caPem issued;
    /// certificatePem holds the client's certificate then the intermediate's.
    TestIdentity clientViaIntermediate;

    /// serverEcdsa's key encrypted with `passphrase` (legacy PEM, AES-128-CBC).
    std::string serverEcdsaEncryptedKeyPem;
    std::string passphrase;
};

/// Made on first use (ECDSA keys take milliseconds, the RSA key a fraction
/// of a second) and kept for the process.
const TestCertificates& testCertificates();

} // namespace wsgate::test
