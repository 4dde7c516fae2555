"""A private WordPress (Debian's 6.1 tree, ``php -S``) on a private MariaDB, for tests.

Follows ../shared/COMPONENTS.md: MariaDB gets its own data directory, socket and free
port; the WordPress tree is copied (``cp -rL``: Debian's ``wp-config.php`` only loads
``/etc/wordpress/config-HOST.php``) and gets its own ``wp-config.php`` with
``WP_ENVIRONMENT_TYPE=local`` so Application Passwords work over plain HTTP. The PHP
server runs with four workers (one worker hangs on WordPress's loopback checks) in its
own process group, which is what :meth:`WordPress.stop_web` kills.

After :meth:`WordPress.start` the site is installed and has one user per role in
:data:`ROLES`, each with an application password (:attr:`WordPress.users`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.services._proc import ServiceProcess, free_port, wait_until

ROLES = ("administrator", "editor", "author", "subscriber")
ADMIN_USER = "administrator"
ADMIN_LOGIN_PASSWORD = "klimaflow-admin-login"
DB_NAME = "wordpress"


def _kill_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process group ``proc`` leads (``php -S`` forks its workers), then SIGKILL."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # orphaned workers, if any
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class MariaDB(ServiceProcess):
    """``mariadbd`` with its own datadir, socket and loopback port (never the system's 3306)."""

    port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kf-mariadb-")))

    @property
    def socket(self) -> Path:
        return self.workdir / "mysqld.sock"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mariadb.log"

    def _ping(self) -> bool:
        r = subprocess.run(
            ["mariadb-admin", f"--socket={self.socket}", "-uroot", "ping"],
            capture_output=True,
            check=False,
        )
        return r.returncode == 0

    def start(self) -> MariaDB:
        if not self.port:
            self.port = free_port()
        datadir = self.workdir / "data"
        if not datadir.exists():
            subprocess.run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={datadir}",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ],
                check=True,
                capture_output=True,
            )
        self._launch(
            [
                shutil.which("mariadbd") or "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={datadir}",
                "--user=root",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.socket}",
                f"--pid-file={self.workdir / 'mariadb.pid'}",
                "--skip-name-resolve",
                f"--log-error={self.log_file}",
            ],
            self._ping,
            "mariadbd",
            self.log_file,
            30,
        )
        return self

    def sql(self, statement: str) -> str:
        r = subprocess.run(
            ["mariadb", f"--socket={self.socket}", "-uroot", "-N", "-e", statement],
            capture_output=True,
            text=True,
            check=True,
        )
        return r.stdout


_SETUP_PHP = r"""<?php
// Users with application passwords for the tests; prints them as JSON.
define('WP_ADMIN', true);
require __DIR__ . '/wp-load.php';
require_once ABSPATH . 'wp-admin/includes/user.php';
update_option('permalink_structure', '/%postname%/');
flush_rewrite_rules();
$out = array();
foreach (json_decode($argv[1], true) as $role) {
    $user = get_user_by('login', $role);
    $id = $user ? $user->ID : wp_insert_user(array(
        'user_login' => $role, 'user_pass' => wp_generate_password(24),
        'user_email' => $role . '@example.org', 'role' => $role, 'display_name' => ucfirst($role),
    ));
    if (is_wp_error($id)) { fwrite(STDERR, $id->get_error_message()); exit(1); }
    $created = WP_Application_Passwords::create_new_application_password($id, array('name' => 'klimaflow-tests'));
    if (is_wp_error($created)) { fwrite(STDERR, $created->get_error_message()); exit(1); }
    $out[$role] = array('id' => $id, 'password' => $created[0]);
}
echo json_encode($out);
"""


@dataclass
class WordPressUser:
    login: str
    id: int
    app_password: str


@dataclass
class WordPress(ServiceProcess):
    """An installed WordPress on ``php -S``; ``stop_web``/``start_web`` cut only the web server."""

    port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kf-wordpress-")))
    db: MariaDB | None = None
    users: dict[str, WordPressUser] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def root(self) -> Path:
        return self.workdir / "wordpress"

    @property
    def log_file(self) -> Path:
        return self.workdir / "php.log"

    def _write_config(self) -> None:
        assert self.db is not None
        (self.root / "wp-config.php").write_text(
            f"""<?php
define('DB_NAME', '{DB_NAME}');
define('DB_USER', 'root');
define('DB_PASSWORD', '');
define('DB_HOST', '127.0.0.1:{self.db.port}');
define('DB_CHARSET', 'utf8mb4');
define('DB_COLLATE', '');
$table_prefix = 'wp_';
define('WP_HOME', '{self.url}');
define('WP_SITEURL', '{self.url}');
define('WP_ENVIRONMENT_TYPE', 'local');
define('DISABLE_WP_CRON', true);
define('WP_HTTP_BLOCK_EXTERNAL', true);
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_DEBUG', false);
foreach (array('AUTH_KEY','SECURE_AUTH_KEY','LOGGED_IN_KEY','NONCE_KEY','AUTH_SALT','SECURE_AUTH_SALT','LOGGED_IN_SALT','NONCE_SALT') as $k) {{
    define($k, 'klimaflow-test-' . $k);
}}
if (!defined('ABSPATH')) {{ define('ABSPATH', __DIR__ . '/'); }}
require_once ABSPATH . 'wp-settings.php';
"""
        )

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/wp-login.php", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    def start_web(self) -> None:
        """Start (again) the PHP server on the same port; the site and its data stay."""
        out = open(self.log_file, "ab")  # noqa: SIM115 - lives as long as the process
        env = {**os.environ, "PHP_CLI_SERVER_WORKERS": "4"}
        self.proc = subprocess.Popen(
            ["php", "-S", f"127.0.0.1:{self.port}", "-t", str(self.root)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=self.root,
        )
        wait_until(self._ready, 30, "php -S (WordPress)", str(self.log_file))

    def stop_web(self) -> None:
        """Stop only the web server (its whole process group): WordPress is 'down'."""
        if self.proc is not None:
            _kill_group(self.proc)
            self.proc = None

    def start(self) -> WordPress:
        """Start MariaDB and ``php -S``; install WordPress and its users on the first start."""
        try:
            return self._start()
        except BaseException:
            self.stop()  # never leave a half-started database or PHP server behind
            raise

    def _start(self) -> WordPress:
        if self.db is None:
            self.db = MariaDB(workdir=self.workdir / "db")
            self.db.workdir.mkdir(parents=True, exist_ok=True)
        self.db.start()
        installed = self.root.exists()
        if not installed:
            self.db.sql(f"CREATE DATABASE IF NOT EXISTS {DB_NAME} CHARACTER SET utf8mb4")
            subprocess.run(["cp", "-rL", "/usr/share/wordpress", str(self.root)], check=True)
        if not self.port:
            self.port = free_port()
        self._write_config()
        self.start_web()
        if not installed:
            self._install()
        return self

    def _install(self) -> None:
        r = httpx.post(
            f"{self.url}/wp-admin/install.php?step=2",
            data={
                "weblog_title": "Klimaflow Test",
                "user_name": ADMIN_USER,
                "admin_password": ADMIN_LOGIN_PASSWORD,
                "admin_password2": ADMIN_LOGIN_PASSWORD,
                "pw_weak": "1",
                "admin_email": "admin@example.org",
                "blog_public": "0",
                "language": "",
            },
            timeout=120,
        )
        if "<h1>Success!</h1>" not in r.text:
            raise RuntimeError(f"WordPress install failed: HTTP {r.status_code}: {r.text[:2000]}")
        script = self.root / "kf-setup-users.php"
        script.write_text(_SETUP_PHP)
        try:
            done = subprocess.run(
                ["php", str(script), json.dumps(ROLES)],
                capture_output=True,
                text=True,
                check=False,
                cwd=self.root,
                timeout=120,
            )
        finally:
            script.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"creating WordPress users failed: {done.stderr or done.stdout}")
        data: dict[str, dict[str, Any]] = json.loads(done.stdout[done.stdout.index("{") :])
        self.users = {role: WordPressUser(role, int(v["id"]), str(v["password"])) for role, v in data.items()}

    def stop(self) -> None:
        self.stop_web()
        if self.db is not None:
            self.db.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- helpers for assertions (as administrator, straight over REST) ---------------------------

    def auth(self, role: str = "administrator") -> tuple[str, str]:
        return (role, self.users[role].app_password)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call as the administrator; raises on HTTP errors; returns the JSON."""
        r = httpx.request(method, f"{self.url}/wp-json{path}", auth=self.auth(), timeout=30, **kwargs)
        r.raise_for_status()
        return r.json()

    def posts(self, slug: str, kind: str = "posts") -> list[dict[str, Any]]:
        """Every post (any status, edit context) with this slug."""
        result: list[dict[str, Any]] = self.api(
            "GET", f"/wp/v2/{kind}", params={"slug": slug, "status": "any", "context": "edit"}
        )
        return result

    def count_sql(self, where: str) -> int:
        """Rows of wp_posts matching ``where``: the ground truth, trash and revisions included."""
        assert self.db is not None
        return int(self.db.sql(f"SELECT COUNT(*) FROM {DB_NAME}.wp_posts WHERE {where}").strip())
