#!/usr/bin/env python3
"""A real browser against echo-server: Debian's Chromium, headless, driven
through chromedriver's WebDriver protocol (plain HTTP, no client library),
opens echo-checks.html from a loopback HTTP server and runs its checks
against ws:// or, with --tls, wss:// with a certificate made here.

    chromium_echo.py --echo-server PATH [--tls]

Exit 0 when every check saw what it should; otherwise each failure is
printed and the exit status is 1."""

import argparse
import functools
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# echo-server's limit, low enough that the browser can send one byte more.
MAX_MESSAGE = 2 * 1024 * 1024
START_TIMEOUT = 30
SCRIPT_TIMEOUT = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_certificate(directory):
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=START_TIMEOUT)
    return cert, key


class EchoServer:
    """echo-server on a free port; its URL is the first line it prints."""

    def __init__(self, binary, tls_files, log_path):
        command = [binary, "--port", "0", "--quiet", "--subprotocols", "chat,superchat",
                   "--max-message", str(MAX_MESSAGE)]
        if tls_files:
            command += ["--cert", tls_files[0], "--key", tls_files[1]]
        self.log = open(log_path, "w+")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log,
                                        stdin=subprocess.DEVNULL, text=True)
        self.url = self.process.stdout.readline().strip()
        if not self.url.startswith(("wss://" if tls_files else "ws://") + "127.0.0.1:"):
            raise RuntimeError(f"echo-server printed {self.url!r}, not its URL")

    def stop(self):
        """Stops it; returns what went wrong with it, or None."""
        problem = None
        if self.process.poll() is not None:
            problem = f"echo-server exited during the checks, status {self.process.returncode}"
        else:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                problem = "echo-server did not stop on SIGTERM"
        self.log.seek(0)
        stderr = self.log.read()
        if "Sanitizer" in stderr or "runtime error" in stderr:
            problem = "echo-server reported:\n" + stderr
        self.log.close()
        return problem


class PageServer:
    """Serves this directory on a loopback port, as a site would serve a page."""

    def __init__(self):
        handler = functools.partial(_QuietHandler, directory=HERE)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class WebDriver:
    """The few WebDriver commands the checks need, over chromedriver's HTTP."""

    def __init__(self, log_path):
        self.port = free_port()
        self.process = subprocess.Popen([CHROMEDRIVER, f"--port={self.port}",
                                         f"--log-path={log_path}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if self._call("GET", "/status", timeout=2)["ready"]:
                    break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        self.session = None

    def _call(self, method, path, body=None, timeout=START_TIMEOUT):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as error:
            detail = json.load(error)["value"]
            raise RuntimeError(f"WebDriver {method} {path}: {detail.get('message', detail)}")

    def start_browser(self):
        capabilities = {
            "browserName": "chrome",
            # The certificate is made here; a browser would ask its user.
            "acceptInsecureCerts": True,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--no-first-run"],
            },
        }
        value = self._call("POST", "/session",
                           {"capabilities": {"alwaysMatch": capabilities}})
        self.session = value["sessionId"]
        self._call("POST", f"/session/{self.session}/timeouts",
                   {"script": SCRIPT_TIMEOUT * 1000})
        return value["capabilities"].get("browserVersion", "?")

    def open(self, url):
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def run_async(self, script, *args):
        return self._call("POST", f"/session/{self.session}/execute/async",
                          {"script": script, "args": list(args)},
                          timeout=SCRIPT_TIMEOUT + 10)

    def quit(self):
        try:
            if self.session:
                self._call("DELETE", f"/session/{self.session}", timeout=10)
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def expectations(limit):
    """What each check of echo-checks.html must report, as (name, test, wanted)."""
    return [
        # echo-server speaks chat and superchat; the browser's first offer it
        # speaks wins. permessage-deflate, which Chromium offers, is declined.
        ("handshake", lambda s: s == {"protocol": "chat", "extensions": ""},
         "protocol 'chat', no extensions"),
        ("subprotocolInTheBrowsersOrder", lambda s: s == {"protocol": "superchat"},
         "protocol 'superchat' when offered first"),
        ("textEchoes", lambda s: s == [True] * 7, "every text message back intact"),
        ("binaryEchoes", lambda s: s == [True] * 7, "every binary message back intact"),
        ("orderOfManyMessages", lambda s: s["inOrder"] == s["count"] == 2000,
         "2000 messages back in order"),
        # The server answers a close with the same code (RFC 6455 §5.5.1).
        ("closeFromBrowser",
         lambda s: s == {"code": 4000, "reason": "done here", "wasClean": True},
         "clean close with code 4000 and the reason"),
        # Failing the connection (RFC 6455 §7.1.7), the server sends its
        # close frame and its FIN at once. Whether the browser counts that as
        # clean depends on whether its own close frame was out by then.
        ("messageOverTheLimit", lambda s: s["code"] == 1009 and s["reason"] == "message too large",
         f"a close with 1009 for {limit + 1} bytes"),
        ("manyConnections", lambda s: s == {"echoed": 50, "clean": 50},
         "50 sockets at once, each echoed and closed cleanly"),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--echo-server", required=True)
    parser.add_argument("--tls", action="store_true", help="wss:// with a certificate made here")
    args = parser.parse_args()
    for tool in (CHROMIUM, CHROMEDRIVER, args.echo_server):
        if not os.access(tool, os.X_OK):
            print(f"chromium_echo: {tool} is missing (scripts/install-deps.sh --browser)")
            return 1

    work = tempfile.mkdtemp(prefix="wsgate-browser-")
    failures = []
    echo = page = driver = None
    try:
        tls_files = make_certificate(work) if args.tls else None
        echo = EchoServer(args.echo_server, tls_files, os.path.join(work, "echo-server.log"))
        page = PageServer()
        driver = WebDriver(os.path.join(work, "chromedriver.log"))
        version = driver.start_browser()
        driver.open(f"http://127.0.0.1:{page.port}/echo-checks.html")
        results = driver.run_async("runChecks(arguments[0], arguments[1], arguments[2]);",
                                   echo.url + "/browser", MAX_MESSAGE)
        print(f"Chromium {version} against {echo.url}")
        for name, test, wanted in expectations(MAX_MESSAGE):
            result = results.get(name)
            if result is None:
                failures.append(f"{name}: did not run")
            elif not result["ok"]:
                failures.append(f"{name}: {result['error']} (wanted {wanted})")
            elif not test(result["seen"]):
                failures.append(f"{name}: saw {json.dumps(result['seen'])[:300]} "
                                f"(wanted {wanted})")
            else:
                print(f"ok  {name}: {wanted}")
    finally:
        if driver:
            driver.quit()
        if page:
            page.stop()
        if echo:
            problem = echo.stop()
            if problem:
                failures.append(problem)
        if not failures:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}")
    for failure in failures:
        print("FAIL " + failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
