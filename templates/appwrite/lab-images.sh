#!/bin/sh
# Lab only: stand-ins of the Appwrite stack's images, built on this node under the compose
# file's own names, because no registry is reachable in the lab. Real MariaDB and Redis from
# Debian's packages; small Python stand-ins for appwrite/appwrite (every entrypoint: each
# answers HTTP with its name, the client address it was given, and whether MariaDB accepts
# the stack's password and Redis answers; `migrate` records the version on the share, and fails
# for a version containing "fail"), for traefik (reads the Traefik labels of the
# containers on its node through the Docker socket as Traefik's docker provider does, trusts
# PROXY protocol v2 only from the addresses of `proxyProtocol.trustedIPs`, routes by
# PathPrefix, forwards with X-Forwarded-For), and for appwrite/influxdb and telegraf.
#
# Usage: sh lab-images.sh APPWRITE_VERSION. Idempotent: rebuilds only when this script changed.
set -eu
version=$1
self=$(sha256sum "$0" | cut -c1-16)
# Outside /var/lib/provision, which the lab's ready layer wipes: the images stay built there.
stamp=/var/lib/provision-lab/appwrite-lab-images
export DEBIAN_FRONTEND=noninteractive

# The packages, without starting their services on the node itself.
installed=$(dpkg-query -W -f='${Status}\n' mariadb-server redis-server python3 2>/dev/null | grep -c '^install ok installed$' || true)
if [ "$installed" != 3 ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -q --no-install-recommends mariadb-server redis-server python3 >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends mariadb-server redis-server python3 >/dev/null; }
    rm -f /usr/sbin/policy-rc.d
fi
systemctl disable --now mariadb.service redis-server.service >/dev/null 2>&1 || true

d=$(mktemp -d)
mkdir -p "$d/lab/bin" "$d/tmp" "$d/var/tmp" "$d/run/mysqld" "$d/var/lib/mysql" "$d/var/log/mysql" \
    "$d/data" "$d/proc" "$d/sys" "$d/dev"
chmod 1777 "$d/tmp" "$d/var/tmp"
chown mysql:mysql "$d/run/mysqld" "$d/var/lib/mysql" "$d/var/log/mysql"
chown redis:redis "$d/data"

cat >"$d/lab/mariadb-entry" <<'EOF'
#!/bin/sh
# MariaDB as the official image starts it: a new data directory is initialised, and the
# database, user and passwords of MYSQL_* are applied (from a 0600 file, at every start); root
# may log in from the stack's network, as the official image's default MARIADB_ROOT_HOST=%.
set -eu
if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
fi
umask 077
sql=/run/mysqld/init.sql
q() { printf '%s' "$1" | sed "s/'/''/g"; }
{
    echo "CREATE DATABASE IF NOT EXISTS \`${MYSQL_DATABASE}\`;"
    echo "CREATE USER IF NOT EXISTS '$(q "$MYSQL_USER")'@'%' IDENTIFIED BY '$(q "$MYSQL_PASSWORD")';"
    echo "ALTER USER '$(q "$MYSQL_USER")'@'%' IDENTIFIED BY '$(q "$MYSQL_PASSWORD")';"
    echo "GRANT ALL ON \`${MYSQL_DATABASE}\`.* TO '$(q "$MYSQL_USER")'@'%';"
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$(q "$MYSQL_ROOT_PASSWORD")';"
    echo "CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '$(q "$MYSQL_ROOT_PASSWORD")';"
    echo "ALTER USER 'root'@'%' IDENTIFIED BY '$(q "$MYSQL_ROOT_PASSWORD")';"
    echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
} >"$sql"
chown mysql "$sql"
exec "$@" --user=mysql --bind-address=0.0.0.0 --skip-name-resolve --init-file="$sql"
EOF

cat >"$d/lab/redis-entry" <<'EOF'
#!/bin/sh
# Redis without a configuration file refuses other hosts (protected mode): the stack's
# network is its only client.
exec "$@" --protected-mode no --dir /data
EOF

cat >"$d/lab/standin.py" <<'EOF'
#!/usr/bin/python3
"""Stand-in for an Appwrite image: answers HTTP on port 80 with its name, the client address
it was given, and whether MariaDB accepts the stack's user and password and Redis answers."""
import hashlib, os, signal, socket, struct, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# As PID 1 without a handler SIGTERM is ignored, and every rolling update would wait out
# Docker's 10 s grace period before a SIGKILL.
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

NAME = os.path.basename(sys.argv[0])
if NAME == "standin.py":
    NAME = sys.argv[1] if len(sys.argv) > 1 else "appwrite"
ENV = os.environ.get

def packet(s):
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            raise OSError("closed")
        head += chunk
    n = head[0] | head[1] << 8 | head[2] << 16
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            raise OSError("closed")
        body += chunk
    return head[3], body

def mariadb():
    """Logs in with mysql_native_password as the stack's user: ok, or why not."""
    try:
        with socket.create_connection((ENV("_APP_DB_HOST", "mariadb"), int(ENV("_APP_DB_PORT", "3306"))), timeout=3) as s:
            _, hello = packet(s)
            if hello[0] != 10:
                return "refused"
            i = hello.index(b"\0", 1) + 1 + 4
            salt = hello[i:i + 8]
            i += 8 + 1 + 2 + 1 + 2 + 2
            n = hello[i]
            i += 1 + 10
            salt += hello[i:i + max(13, n - 8)][:12]
            pw = ENV("_APP_DB_PASS", "").encode()
            h1 = hashlib.sha1(pw).digest()
            token = bytes(a ^ b for a, b in zip(h1, hashlib.sha1(salt + hashlib.sha1(h1).digest()).digest()))
            caps = 0x200 | 0x8000 | 0x8 | 0x80000
            body = struct.pack("<IIB23x", caps, 1 << 24, 33) + ENV("_APP_DB_USER", "").encode() + b"\0"
            body += bytes([len(token)]) + token + ENV("_APP_DB_SCHEMA", "").encode() + b"\0"
            body += b"mysql_native_password\0"
            s.sendall(struct.pack("<I", len(body))[:3] + b"\1" + body)
            _, reply = packet(s)
            return "ok" if reply[0] == 0 else "denied"
    except (OSError, IndexError, ValueError) as e:
        return "down"

def redis():
    try:
        with socket.create_connection((ENV("_APP_REDIS_HOST", "redis"), int(ENV("_APP_REDIS_PORT", "6379"))), timeout=3) as s:
            s.sendall(b"PING\r\n")
            return "ok" if s.recv(64).startswith(b"+PONG") else "bad"
    except OSError:
        return "down"

if NAME == "migrate":
    # Appwrite's `migrate`: needs the database; appends the version to a log on the share
    # (the lab counts migrations there); a version containing "fail" fails, to test rollback.
    version = ENV("LAB_VERSION", "?")
    db = mariadb()
    if db != "ok":
        print(f"migrate: cannot log in to the database ({db})", file=sys.stderr)
        sys.exit(1)
    if "fail" in version:
        print(f"migrate: migration to {version} failed (the lab stand-in was told to fail)", file=sys.stderr)
        sys.exit(1)
    with open("/storage/uploads/lab-migrations.log", "a") as f:
        f.write(f"{version}\n")
    print(f"migrate: migrated to {version}")
    sys.exit(0)

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        client = self.headers.get("X-Forwarded-For", self.client_address[0])
        body = f"service={NAME} client={client} path={self.path} db={mariadb()} redis={redis()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("", 80), Handler).serve_forever()
EOF

cat >"$d/lab/edge.py" <<'EOF'
#!/usr/bin/python3
"""Stand-in for Traefik: listens on the ports of --entrypoints.NAME.address, takes the client's
address from a PROXY protocol v2 header only when the connection comes from an address of
--entrypoints.NAME.proxyProtocol.trustedIPs (a header from anyone else is refused), routes by
the PathPrefix rules in the Traefik labels of the containers on this node (Docker socket),
and forwards the request with X-Forwarded-For. Plain HTTP on every port, 443 included."""
import http.client, json, os, re, signal, socket, sys, threading, urllib.parse

signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
ports, trusted = {}, {}
for arg in sys.argv[1:]:
    m = re.match(r"--entrypoints\.([^.]+)\.address=:(\d+)$", arg)
    if m:
        ports[m.group(1)] = int(m.group(2))
    m = re.match(r"--entrypoints\.([^.]+)\.proxyProtocol\.trustedIPs=(.*)$", arg)
    if m:
        trusted[m.group(1)] = set(filter(None, m.group(2).split(",")))

class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/var/run/docker.sock")

def routes(entrypoint):
    """(prefix, address, port) of every router of this entrypoint, longest prefix first."""
    c = Unix("docker")
    filters = urllib.parse.quote(json.dumps({"label": ["traefik.enable=true"]}))
    c.request("GET", "/containers/json?filters=" + filters)
    out = []
    for ct in json.loads(c.getresponse().read()):
        labels = ct["Labels"]
        net = labels.get("traefik.docker.network")
        ip = ct["NetworkSettings"]["Networks"].get(net, {}).get("IPAddress")
        for key, rule in labels.items():
            m = re.match(r"traefik\.http\.routers\.([^.]+)\.rule$", key)
            p = re.match(r"PathPrefix\(`([^`]*)`\)$", rule)
            if not (m and p and ip):
                continue
            router = m.group(1)
            if entrypoint not in labels.get(f"traefik.http.routers.{router}.entrypoints", "").split(","):
                continue
            service = labels.get(f"traefik.http.routers.{router}.service", router)
            port = int(labels.get(f"traefik.http.services.{service}.loadbalancer.server.port", "80"))
            out.append((p.group(1), ip, port))
    return sorted(out, key=lambda r: -len(r[0]))

def recv_exact(s, n, buf=b""):
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("closed")
        buf += chunk
    return buf

def serve(conn, peer, entrypoint):
    with conn:
        try:
            data = recv_exact(conn, 16)
            client = peer
            if data.startswith(SIG):
                if peer not in trusted.get(entrypoint, set()):
                    return
                extra = recv_exact(conn, int.from_bytes(data[14:16], "big"))
                if data[13] == 0x11:
                    client = socket.inet_ntoa(extra[0:4])
                data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, rest = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            target = next((r for r in routes(entrypoint) if path.startswith(r[0])), None)
            if target is None:
                conn.sendall(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            keep = [l for l in lines[1:] if not l.lower().startswith(("x-forwarded-for:", "connection:"))]
            request = "\r\n".join([lines[0]] + keep + [f"X-Forwarded-For: {client}", "Connection: close"])
            with socket.create_connection((target[1], target[2]), timeout=10) as up:
                up.sendall(request.encode("latin-1") + b"\r\n\r\n" + rest)
                while True:
                    chunk = up.recv(65536)
                    if not chunk:
                        break
                    conn.sendall(chunk)
        except (OSError, ValueError, IndexError):
            pass

def listen(entrypoint, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    s.listen(64)
    while True:
        conn, (peer, _) = s.accept()
        threading.Thread(target=serve, args=(conn, peer, entrypoint), daemon=True).start()

threads = [threading.Thread(target=listen, args=item) for item in ports.items()]
for t in threads:
    t.start()
for t in threads:
    t.join()
EOF
chmod 755 "$d/lab/mariadb-entry" "$d/lab/redis-entry" "$d/lab/standin.py" "$d/lab/edge.py"
# Every entrypoint of the appwrite/appwrite services, on PATH in that image.
for e in realtime executor maintenance usage schedule worker-audits worker-webhooks worker-deletes \
    worker-databases worker-builds worker-certificates worker-functions worker-mails worker-messaging migrate; do
    ln -s ../standin.py "$d/lab/bin/$e"
done

# One base image of the node's own system (kernel modules, firmware, docs, Docker itself and
# the node's secrets left out), then one small layer per image name: its entrypoint.
base="lab/appwrite-base:$self"
if ! docker image inspect "$base" >/dev/null 2>&1; then
    tar -c -C / --exclude=usr/lib/modules --exclude=usr/lib/firmware --exclude=usr/share/doc \
        --exclude=usr/share/man --exclude=usr/share/locale --exclude=usr/share/i18n \
        --exclude='usr/bin/docker*' --exclude='usr/sbin/docker*' --exclude='usr/bin/containerd*' \
        --exclude=usr/sbin/runc --exclude=usr/bin/runc --exclude=etc/ssh --exclude='etc/shadow*' \
        --exclude='etc/gshadow*' --exclude=var/lib/mysql \
        bin sbin lib lib64 usr etc -C "$d" . 2>/dev/null | docker import - "$base" >/dev/null
fi
rm -rf "$d"
image() { # image NAME CHANGE...: NAME from the base with the given Dockerfile changes
    name=$1
    shift
    c=$(docker create "$base" /bin/true)
    # Each CHANGE becomes `--change CHANGE` (the loop's list is the arguments as they were).
    for change in "$@"; do
        set -- "$@" --change "$change"
        shift
    done
    docker commit "$@" "$c" "$name" >/dev/null
    docker rm "$c" >/dev/null
}
image mariadb:10.7 'ENTRYPOINT ["/lab/mariadb-entry"]' 'CMD ["mysqld"]'
image redis:7.0.4-alpine 'ENTRYPOINT ["/lab/redis-entry"]' 'CMD ["redis-server"]'
image traefik:2.7 'ENTRYPOINT ["python3", "/lab/edge.py"]'
image "appwrite/appwrite:$version" 'ENTRYPOINT ["python3", "/lab/standin.py"]' \
    'ENV PATH=/lab/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "ENV LAB_VERSION=$version"
image appwrite/influxdb:1.5.0 'ENTRYPOINT ["python3", "/lab/standin.py", "influxdb"]'
image appwrite/telegraf:1.4.0 'ENTRYPOINT ["python3", "/lab/standin.py", "telegraf"]'
mkdir -p "$(dirname "$stamp")"
printf '%s %s\n' "$self" "$version" >"$stamp"
