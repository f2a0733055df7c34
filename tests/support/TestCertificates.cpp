#include "support/TestCertificates.h"

#include <mbedtls/aes.h>
#include <mbedtls/asn1.h>
#include <mbedtls/base64.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/md5.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/rsa.h>
#include <mbedtls/x509_crt.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string_view>
#include <vector>

namespace wsgate::test {

namespace {

// Test setup has no way to go on without its certificates.
void check(int rc, const char* what) {
    if (rc != 0) {
        std::fprintf(stderr, "TestCertificates: %s failed: -0x%04X\n", what,
                     static_cast<unsigned>(-rc));
        std::abort();
    }
}

class Random {
public:
    Random() {
        mbedtls_entropy_init(&entropy_);
        mbedtls_ctr_drbg_init(&drbg_);
        check(mbedtls_ctr_drbg_seed(&drbg_, mbedtls_entropy_func, &entropy_, nullptr, 0),
              "ctr_drbg_seed");
    }
    ~Random() {
        mbedtls_ctr_drbg_free(&drbg_);
        mbedtls_entropy_free(&entropy_);
    }
    Random(const Random&) = delete;
    Random& operator=(const Random&) = delete;
    void* state() { return &drbg_; }
    static int generate(void* state, unsigned char* out, std::size_t size) {
        return mbedtls_ctr_drbg_random(state, out, size);
    }

private:
    mbedtls_entropy_context entropy_;
    mbedtls_ctr_drbg_context drbg_;
};

struct Key {
    Key() { mbedtls_pk_init(&pk); }
    ~Key() { mbedtls_pk_free(&pk); }
    Key(const Key&) = delete;
    Key& operator=(const Key&) = delete;
    std::string pem() {
        std::vector<unsigned char> buffer(8192);
        check(mbedtls_pk_write_key_pem(&pk, buffer.data(), buffer.size()), "pk_write_key_pem");
        return reinterpret_cast<const char*>(buffer.data());
    }
    std::vector<unsigned char> der() {
        std::vector<unsigned char> buffer(8192);
        const int size = mbedtls_pk_write_key_der(&pk, buffer.data(), buffer.size());
        if (size <= 0) {
            check(size < 0 ? size : -1, "pk_write_key_der");
        }
        return {buffer.end() - size, buffer.end()};
    }
    mbedtls_pk_context pk;
};

std::unique_ptr<Key> makeEcKey(Random& random) {
    auto key = std::make_unique<Key>();
    check(mbedtls_pk_setup(&key->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), "pk_setup");
    check(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key->pk), &Random::generate,
                              random.state()),
          "ecp_gen_key");
    return key;
}

std::unique_ptr<Key> makeRsaKey(Random& random) {
    auto key = std::make_unique<Key>();
    check(mbedtls_pk_setup(&key->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA)), "pk_setup");
    check(mbedtls_rsa_gen_key(mbedtls_pk_rsa(key->pk), &Random::generate, random.state(), 2048,
                              65537),
          "rsa_gen_key");
    return key;
}

// X.509 times are "YYYYMMDDhhmmss" in UTC.
std::string x509Time(long long offsetSeconds) {
    const std::time_t t = std::time(nullptr) + static_cast<std::time_t>(offsetSeconds);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char text[16];
    std::strftime(text, sizeof text, "%Y%m%d%H%M%S", &tm);
    return text;
}

constexpr long long day = 86400;

struct CertificateSpec {
    std::string subject;
    std::string issuer;
    bool isCa = false;
    long long notBefore = -day;
    long long notAfter = 365 * day;
    bool serverAuthOnly = false;
};

std::string issue(Random& random, const CertificateSpec& spec, Key& subjectKey, Key& issuerKey) {
    static int serial = 1;
    mbedtls_x509write_cert writer;
    mbedtls_x509write_crt_init(&writer);
    mbedtls_mpi number;
    mbedtls_mpi_init(&number);
    check(mbedtls_mpi_lset(&number, ++serial), "mpi_lset");
    mbedtls_x509write_crt_set_version(&writer, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&writer, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&writer, &subjectKey.pk);
    mbedtls_x509write_crt_set_issuer_key(&writer, &issuerKey.pk);
    check(mbedtls_x509write_crt_set_subject_name(&writer, spec.subject.c_str()), "subject");
    check(mbedtls_x509write_crt_set_issuer_name(&writer, spec.issuer.c_str()), "issuer");
    check(mbedtls_x509write_crt_set_serial(&writer, &number), "serial");
    check(mbedtls_x509write_crt_set_validity(&writer, x509Time(spec.notBefore).c_str(),
                                             x509Time(spec.notAfter).c_str()),
          "validity");
    check(mbedtls_x509write_crt_set_basic_constraints(&writer, spec.isCa ? 1 : 0, -1),
          "basic constraints");
    check(mbedtls_x509write_crt_set_subject_key_identifier(&writer), "subject key id");
    check(mbedtls_x509write_crt_set_authority_key_identifier(&writer), "authority key id");
    const unsigned int usage =
        spec.isCa ? MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN
                  : MBEDTLS_X509_KU_DIGITAL_SIGNATURE | MBEDTLS_X509_KU_KEY_ENCIPHERMENT;
    check(mbedtls_x509write_crt_set_key_usage(&writer, usage), "key usage");
    if (spec.serverAuthOnly) {
        // ExtKeyUsageSyntax ::= SEQUENCE { id-kp-serverAuth }
        static const unsigned char serverAuth[] = {0x30, 0x0A, 0x06, 0x08, 0x2B, 0x06,
                                                   0x01, 0x05, 0x05, 0x07, 0x03, 0x01};
        check(mbedtls_x509write_crt_set_extension(&writer, MBEDTLS_OID_EXTENDED_KEY_USAGE,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE),
                                                  0, serverAuth, sizeof serverAuth),
              "extended key usage");
    }
    std::vector<unsigned char> buffer(4096);
    check(mbedtls_x509write_crt_pem(&writer, buffer.data(), buffer.size(), &Random::generate,
                                    random.state()),
          "x509write_crt_pem");
    mbedtls_mpi_free(&number);
    mbedtls_x509write_crt_free(&writer);
    return reinterpret_cast<const char*>(buffer.data());
}

std::string base64Lines(const std::vector<unsigned char>& bytes) {
    std::size_t size = 0;
    mbedtls_base64_encode(nullptr, 0, &size, bytes.data(), bytes.size());
    std::string encoded(size, '\0');
    check(mbedtls_base64_encode(reinterpret_cast<unsigned char*>(encoded.data()), encoded.size(),
                                &size, bytes.data(), bytes.size()),
          "base64_encode");
    encoded.resize(size);
    std::string out;
    for (std::size_t i = 0; i < encoded.size(); i += 64) {
        out += encoded.substr(i, 64);
        out += '\n';
    }
    return out;
}

// The legacy OpenSSL PEM encryption that mbedTLS reads: AES-128-CBC with
// key = MD5(passphrase || first 8 bytes of the IV) and PKCS#7 padding.
std::string encryptEcKeyPem(Random& random, Key& key, std::string_view passphrase) {
    std::vector<unsigned char> plain = key.der();
    const std::size_t padding = 16 - plain.size() % 16;
    plain.insert(plain.end(), padding, static_cast<unsigned char>(padding));
    unsigned char iv[16];
    check(Random::generate(random.state(), iv, sizeof iv), "iv");
    std::vector<unsigned char> material(passphrase.begin(), passphrase.end());
    material.insert(material.end(), iv, iv + 8);
    unsigned char aesKey[16];
    check(mbedtls_md5_ret(material.data(), material.size(), aesKey), "md5");
    mbedtls_aes_context aes;
    mbedtls_aes_init(&aes);
    check(mbedtls_aes_setkey_enc(&aes, aesKey, 128), "aes_setkey_enc");
    std::vector<unsigned char> encrypted(plain.size());
    unsigned char chain[16];
    std::copy(iv, iv + 16, chain);
    check(mbedtls_aes_crypt_cbc(&aes, MBEDTLS_AES_ENCRYPT, plain.size(), chain, plain.data(),
                                encrypted.data()),
          "aes_crypt_cbc");
    mbedtls_aes_free(&aes);
    char ivHex[33];
    for (int i = 0; i < 16; ++i) {
        std::snprintf(ivHex + 2 * i, 3, "%02X", iv[i]);
    }
    return "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC," +
           std::string(ivHex) + "\n\n" + base64Lines(encrypted) + "-----END EC PRIVATE KEY-----\n";
}

std::string subjectOf(const std::string& pem) {
    mbedtls_x509_crt certificate;
    mbedtls_x509_crt_init(&certificate);
    check(mbedtls_x509_crt_parse(&certificate, reinterpret_cast<const unsigned char*>(pem.c_str()),
                                 pem.size() + 1),
          "x509_crt_parse");
    char text[256];
    const int size = mbedtls_x509_dn_gets(text, sizeof text, &certificate.subject);
    mbedtls_x509_crt_free(&certificate);
    return size > 0 ? std::string(text, static_cast<std::size_t>(size)) : std::string();
}

TestIdentity identity(Random& random, const CertificateSpec& spec, Key& key, Key& issuerKey) {
    TestIdentity out;
    out.certificatePem = issue(random, spec, key, issuerKey);
    out.privateKeyPem = key.pem();
    out.subject = subjectOf(out.certificatePem);
    return out;
}

TestCertificates make() {
    Random random;
    TestCertificates out;
    const std::string caName = "CN=wsgate test CA,O=wsgate test";
    const std::string otherCaName = "CN=wsgate other CA,O=elsewhere";
    const std::string intermediateName = "CN=wsgate intermediate CA,O=wsgate test";

    auto caKey = makeEcKey(random);
    out.caPem = issue(random, {caName, caName, true}, *caKey, *caKey);
    auto otherCaKey = makeEcKey(random);
    out.otherCaPem = issue(random, {otherCaName, otherCaName, true}, *otherCaKey, *otherCaKey);

    auto serverKey = makeEcKey(random);
    out.serverEcdsa = identity(random, {"CN=localhost,O=wsgate test", caName}, *serverKey, *caKey);
    out.passphrase = "correct horse battery staple";
    out.serverEcdsaEncryptedKeyPem = encryptEcKeyPem(random, *serverKey, out.passphrase);

    auto rsaKey = makeRsaKey(random);
    out.serverRsa = identity(random, {"CN=localhost,O=wsgate test RSA", caName}, *rsaKey, *caKey);
    auto sniKey = makeEcKey(random);
    out.sniServer = identity(random, {"CN=sni.example.com,O=wsgate test", caName}, *sniKey, *caKey);
    auto wildcardKey = makeEcKey(random);
    out.wildcardServer =
        identity(random, {"CN=*.example.net,O=wsgate test", caName}, *wildcardKey, *caKey);

    auto clientKey = makeEcKey(random);
    out.client = identity(random, {"CN=client,O=wsgate test", caName}, *clientKey, *caKey);
    auto expiredKey = makeEcKey(random);
    out.clientExpired =
        identity(random, {"CN=expired client,O=wsgate test", caName, false, -400 * day, -30 * day},
                 *expiredKey, *caKey);
    auto strangerKey = makeEcKey(random);
    out.clientOtherCa =
        identity(random, {"CN=stranger,O=elsewhere", otherCaName}, *strangerKey, *otherCaKey);
    auto selfSignedKey = makeEcKey(random);
    const std::string selfName = "CN=self-signed client,O=nobody";
    out.clientSelfSigned = identity(random, {selfName, selfName}, *selfSignedKey, *selfSignedKey);
    auto serverAuthKey = makeEcKey(random);
    CertificateSpec serverAuthOnly{"CN=server-auth-only,O=wsgate test", caName};
    serverAuthOnly.serverAuthOnly = true;
    out.clientServerAuthOnly = identity(random, serverAuthOnly, *serverAuthKey, *caKey);

    auto intermediateKey = makeEcKey(random);
    const std::string intermediatePem =
        issue(random, {intermediateName, caName, true}, *intermediateKey, *caKey);
    auto chainedKey = makeEcKey(random);
    out.clientViaIntermediate =
        identity(random, {"CN=chained client,O=wsgate test", intermediateName}, *chainedKey,
                 *intermediateKey);
    out.clientViaIntermediate.certificatePem += intermediatePem;
    return out;
}

} // namespace

const TestCertificates& testCertificates() {
    static const TestCertificates certificates = make();
    return certificates;
}

} // namespace wsgate::test
