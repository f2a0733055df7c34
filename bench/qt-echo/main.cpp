// qt-echo: the reference echo server for bench/run, on Qt's QWebSocketServer.
//
// It echoes text as text and binary as binary, listens on 127.0.0.1 only and
// prints its URL on the first stdout line, like wsgate's examples/echo-server,
// so that bench/run can drive both the same way.

#include <QCoreApplication>
#include <QHostAddress>
#include <QWebSocket>
#include <QWebSocketServer>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

// High enough for the 1 MiB case with room to spare, and set here so that the
// benchmark does not depend on Qt's defaults.
constexpr quint64 maxMessageBytes = 64ULL * 1024 * 1024;

// Qt's default of 30 pending connections would refuse clients while the idle
// case opens 10,000 of them; the server takes each one at once anyway.
constexpr int maxPending = 4096;

void usage() {
    std::fprintf(stderr, "usage: qt-echo [--port N] (0 picks a free port)\n");
}

} // namespace

int main(int argc, char** argv) {
    QCoreApplication app(argc, argv);

    quint16 port = 0;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--port" && i + 1 < argc) {
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

    QWebSocketServer server(QStringLiteral("qt-echo"), QWebSocketServer::NonSecureMode);
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

    std::printf("ws://127.0.0.1:%u\n", static_cast<unsigned>(server.serverPort()));
    std::fflush(stdout);
    return QCoreApplication::exec();
}
