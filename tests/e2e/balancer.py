"""A real round-robin load balancer for the multi-node tests: nginx on a loopback port.

No affinity of any kind: consecutive requests (a negotiate, the transport request after it,
each poll and POST) go to the next backend in turn, as a plain Service or balancer would send
them. A backend that refuses connections (a node that stopped) is skipped: the request goes to
the next one (``proxy_next_upstream error timeout``, nginx's default, spelt out). By default
nginx then leaves that backend out for ten seconds (``max_fails=1 fail_timeout=10s``);
``server_params`` (e.g. ``"max_fails=0"``) changes that for every backend.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import LOOPBACK, get_free_port, wait_for_port

NGINX_CONF = """
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream hubs {{
        {balance}
        {servers}
    }}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://hubs;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
            proxy_next_upstream error timeout;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
        }}
    }}
}}
"""


class Nginx:
    """A real round-robin balancer (nginx from the Debian packages) on a loopback port."""

    def __init__(
        self,
        workdir: Path,
        backends: list[int],
        sticky: bool = False,
        server_params: str = "",
        hash_on: str | None = None,
    ) -> None:
        """``sticky``: every request of a client goes to one backend (by its address), as
        with session affinity; the next backend takes over when that one refuses.
        ``hash_on``: the same by any nginx variable instead, e.g. ``$arg_id`` (every request
        of one SignalR connection to one backend; negotiates, which have no id, all go to one).
        ``server_params`` go on every ``server`` line (``max_fails=0``, ...)."""
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(exe).exists():
            pytest.fail("nginx not found: install it (Debian/Ubuntu: apt-get install nginx-light)")
        self.port = get_free_port()
        self.dir = workdir
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / sub).mkdir(exist_ok=True)
        params = f" {server_params}" if server_params else ""
        servers = "\n        ".join(f"server {LOOPBACK}:{p}{params};" for p in backends)
        conf = workdir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                dir=workdir,
                servers=servers,
                host=LOOPBACK,
                port=self.port,
                balance=(
                    f"hash {hash_on} consistent;"
                    if hash_on
                    else "hash $remote_addr consistent;"
                    if sticky
                    else ""
                ),
            )
        )
        self.proc = subprocess.Popen(
            [exe, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        if not wait_for_port(self.port, 10):
            self.stop()
            raise RuntimeError(f"nginx did not start: {(workdir / 'error.log').read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
