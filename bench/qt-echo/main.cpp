// qt-echo: the reference echo server for bench/run, on Qt's QWebSocketServer.
//
// It echoes text as text and binary as binary, listens on 127.0.0.1 only and
// prints its URL on the first stdout line, like wsgate's examples/echo-server,
// so that bench/run can drive both the same way. With --cert and --key it
// serves wss:// (Qt's TLS backend, OpenSSL on Debian).

#include <QCoreApplication>
#include <QFile>
#include <QHostAddress>
#include <QSslCertificate>
#include <QSslConfiguration>
#include <QSslKey>
#include <QSslSocket>
#include <QWebSocket>
#include <QWebSocketServer>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string_view>

namespace {

// High enough for the 1 MiB case with room to spare, and set here so that the
// benchmark does not depend on Qt's defaults.
constexpr quint64 maxMessageBytes = 64ULL * 1024 * 1024;

// Qt's default of 30 pending connections would refuse clients while the idle
// case opens 10,000 of them; the server takes each one at once anyway.
constexpr int maxPending = 4096;

void usage() {
    std::fprintf(stderr, "usage: qt-echo [--port N] [--cert FILE --key FILE]\n"
                         "  --port N     0 (the default) picks a free port\n"
                         "  --cert FILE  serve wss:// with this PEM certificate (chain)\n"
                         "  --key FILE   and this PEM private key (EC or RSA)\n");
}

std::optional<QByteArray> readFile(const char* path) {
    QFile file(QString::fromLocal8Bit(path));
    if (!file.open(QIODevice::ReadOnly)) {
        std::fprintf(stderr, "qt-echo: %s: %s\n", path, qPrintable(file.errorString()));
        return std::nullopt;
    }
    return file.readAll();
}

// The same TLS settings as wsgate's echo server gets from bench/run: the
// given certificate and key, no client certificate, ALPN http/1.1.
std::optional<QSslConfiguration> tlsConfiguration(const char* certPath, const char* keyPath) {
    if (!QSslSocket::supportsSsl()) {
        std::fprintf(stderr, "qt-echo: Qt has no working TLS backend here (%s)\n",
                     qPrintable(QSslSocket::activeBackend()));
        return std::nullopt;
    }
    std::optional<QByteArray> certPem = readFile(certPath);
    std::optional<QByteArray> keyPem = readFile(keyPath);
    if (!certPem || !keyPem) {
        return std::nullopt;
    }
    QList<QSslCertificate> chain = QSslCertificate::fromData(*certPem, QSsl::Pem);
    if (chain.isEmpty()) {
        std::fprintf(stderr, "qt-echo: no PEM certificate in %s\n", certPath);
        return std::nullopt;
    }
    // QSslKey needs the algorithm up front; the benchmark's keys are EC.
    QSslKey key(*keyPem, QSsl::Ec, QSsl::Pem);
    if (key.isNull()) {
        key = QSslKey(*keyPem, QSsl::Rsa, QSsl::Pem);
    }
    if (key.isNull()) {
        std::fprintf(stderr, "qt-echo: no EC or RSA PEM private key in %s\n", keyPath);
        return std::nullopt;
    }
    QSslConfiguration config = QSslConfiguration::defaultConfiguration();
    config.setLocalCertificate(chain.front());
    if (chain.size() > 1) {
        config.setLocalCertificateChain(chain);
    }
    config.setPrivateKey(key);
    config.setPeerVerifyMode(QSslSocket::VerifyNone);
    config.setAllowedNextProtocols({QByteArray(QSslConfiguration::NextProtocolHttp1_1)});
    return config;
}

} // namespace

int main(int argc, char** argv) {
    QCoreApplication app(argc, argv);

    quint16 port = 0;
    const char* certPath = nullptr;
    const char* keyPath = nullptr;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--cert" && i + 1 < argc) {
            certPath = argv[++i];
        } else if (arg == "--key" && i + 1 < argc) {
            keyPath = argv[++i];
        } else if (arg == "--port" && i + 1 < argc) {
            char* end = nullptr;
            unsigned long value = std::strtoul(argv[++i], &end, 10);
            if (*end != '\0' || value > 65535) {
                usage();
                return 2;
            }
            port = static_cast<quint16>(value);
        } else {
            usage();
            return 2;
        }
    }

    if ((certPath == nullptr) != (keyPath == nullptr)) {
        std::fprintf(stderr, "qt-echo: --cert and --key go together\n");
        return 2;
    }
    bool secure = certPath != nullptr;
    QWebSocketServer server(QStringLiteral("qt-echo"), secure ? QWebSocketServer::SecureMode
                                                              : QWebSocketServer::NonSecureMode);
    if (secure) {
        std::optional<QSslConfiguration> config = tlsConfiguration(certPath, keyPath);
        if (!config) {
            return 1;
        }
        server.setSslConfiguration(*config);
    }
    server.setMaxPendingConnections(maxPending);
    if (!server.listen(QHostAddress::LocalHost, port)) {
        std::fprintf(stderr, "qt-echo: listen: %s\n", qPrintable(server.errorString()));
        return 1;
    }

    QObject::connect(&server, &QWebSocketServer::newConnection, [&server] {
        // One signal may stand for several connections.
        while (QWebSocket* socket = server.nextPendingConnection()) {
            socket->setMaxAllowedIncomingMessageSize(maxMessageBytes);
            socket->setMaxAllowedIncomingFrameSize(maxMessageBytes);
            QObject::connect(
                socket, &QWebSocket::textMessageReceived, socket,
                [socket](const QString& message) { socket->sendTextMessage(message); });
            QObject::connect(
                socket, &QWebSocket::binaryMessageReceived, socket,
                [socket](const QByteArray& message) { socket->sendBinaryMessage(message); });
            QObject::connect(socket, &QWebSocket::disconnected, socket, &QObject::deleteLater);
        }
    });

    std::printf("%s://127.0.0.1:%u\n", secure ? "wss" : "ws",
                static_cast<unsigned>(server.serverPort()));
    std::fflush(stdout);
    return QCoreApplication::exec();
}
