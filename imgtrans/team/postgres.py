"""A PostgreSQL cluster of our own in a folder, and the checks a database URL gets before a server uses it.

Passwords never go on a command line (`ps` shows those): the cluster's password lives in a libpq password
file (`pgpass`, mode 0600) that clients find through PGPASSFILE, and URLs carry no password. PostgreSQL
refuses to run as root, so under root the cluster's programs run as the `postgres` account.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from imgtrans.errors import ImgtransError, without_password
from imgtrans.files import scratch_dir, write_secret
from imgtrans.team.network import advertised, free_port, local, port_in_use

USER = "imgtrans"
DATABASES = ("mlflow", "optuna")
SERVICE_ACCOUNT = "postgres"
INSTALL_HINT = ("install PostgreSQL (Debian/Ubuntu: apt-get install postgresql) or pass --backend-store-uri of "
                "an existing database")


def server_programs() -> Path:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        raise ImgtransError(f"PostgreSQL's server programs (initdb, pg_ctl) were not found: {INSTALL_HINT}")
    return Path(versions[-1]).parent


def redacted(url: str) -> str:

    return make_url(url).render_as_string(hide_password=True)


def check_database_url(url: str, option: str) -> None:
    """A PostgreSQL URL without a password in it, whose database answers; else one line saying what to do."""

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ImgtransError(f"{option}: '{without_password(url)}' is not a database URL; expected "
                            "postgresql://USER@HOST:PORT/DB") from None
    if not parsed.drivername.startswith("postgresql"):
        raise ImgtransError(f"{option}: a team server needs PostgreSQL, got '{parsed.drivername}'; expected "
                            "postgresql://USER@HOST:PORT/DB")
    if parsed.password is not None:
        raise ImgtransError(f"{option}: take the password out of the URL (command lines are visible to `ps`); put "
                            "it in PGPASSWORD or a password file named by PGPASSFILE")
    connect(url, option).close()


def connect(url: str, option: str = "database", environment: dict[str, str] | None = None, timeout_s: int = 5):
    """An open psycopg connection to `url` (libpq also reads `environment`, e.g. PGPASSFILE), or one line naming
    the database and the reason."""
    try:
        import psycopg
    except ImportError:
        raise ImgtransError('PostgreSQL support is not installed: pip install "imgtrans[team]"') from None

    parsed = make_url(url)
    try:
        return psycopg.connect(host=parsed.host or None, port=parsed.port or None, user=parsed.username or None,
                               dbname=parsed.database or None, password=parsed.password or None,
                               connect_timeout=timeout_s, passfile=(environment or {}).get("PGPASSFILE"),
                               autocommit=True)
    except psycopg.OperationalError as exc:
        reason = " ".join(str(exc).split())
        raise ImgtransError(f"{option}: cannot reach {redacted(url)} ({reason}); check that PostgreSQL runs there "
                            "and that PGPASSWORD or PGPASSFILE holds the password") from None


@dataclass
class LocalCluster:
    """A PostgreSQL cluster in `root` (created on first use) serving `host:port` with password authentication.

    root/postgres is the cluster, root/pgpass its password file, root/cluster.json the address it was created
    for (later starts reuse it), root/postgres/server.log the server's log."""

    root: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: the recorded port, or a free one for a new cluster

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        self.data = self.root / "postgres"
        self.passfile = self.root / "pgpass"
        self.record = self.root / "cluster.json"
        self.log = self.data / "server.log"
        self.started = False  # by this object: only then does stop() stop it
        self.bin = server_programs()

    def url(self, database: str, for_clients: bool = True) -> str:
        """The database's URL as other machines (for_clients) or this one reach it; no password in it."""
        host = advertised(self.host) if for_clients else local(self.host)
        return f"postgresql://{USER}@{host}:{self.port}/{database}"

    @property
    def exists(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def start(self) -> None:
        """Create the cluster if it is new, start it, and create the databases it serves."""
        if self.exists:
            recorded = json.loads(self.record.read_text())
            if self.port and self.port != recorded["port"]:
                raise ImgtransError(f"the database in {self.root} was created for port {recorded['port']}; leave "
                                    "--db-port out or use another --data-dir")
            self.port = recorded["port"]  # the address it listens on is this start's choice
        else:
            if self.port:  # before a cluster is made for a port it cannot have
                self._check_port_free()
            self._create()
        if self._running():
            raise ImgtransError(f"the database in {self.data} is already running: another `imgtrans server` on this "
                                f"--data-dir, or one killed without stopping it (then `{self.bin / 'pg_ctl'} -D "
                                f"{self.data} stop`, as the postgres user under root)")
        self._check_port_free()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", f"-p {self.port} -c listen_addresses={self.host} -c unix_socket_directories=''", "start")
        self.started = True
        self._create_databases()

    def stop(self) -> None:
        if self.started and self._running():
            self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", "fast", "stop")

    def environment(self) -> dict[str, str]:
        """What a client process needs to log in."""
        return {"PGPASSFILE": str(self.passfile)}

    # --- internals -------------------------------------------------------------------------------------

    def _check_port_free(self) -> None:
        if port_in_use(self.host, self.port):
            raise ImgtransError(f"database port {self.port} on {self.host} is in use; stop what listens there or "
                                "create the stack in another --data-dir with another --db-port")

    def _create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        password = secrets.token_urlsafe(24)
        self.data.mkdir(mode=0o700)
        # initdb reads the password from a file: a private one in a scratch folder (swept after a kill -9)
        with scratch_dir("initdb") as private:
            pwfile = write_secret(private / "password", password)
            try:
                self._hand_over(self.data, private, pwfile)
                self._run("initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile), "-E", "UTF8",
                          "--auth-host=scram-sha-256", "--auth-local=scram-sha-256")
                with open(self.data / "pg_hba.conf", "a") as hba:  # listen_addresses decides who can reach it
                    hba.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
            except BaseException:
                shutil.rmtree(self.data, ignore_errors=True)
                raise
        write_secret(self.passfile, f"*:{self.port}:*:{USER}:{password}\n")
        self.record.write_text(json.dumps({"host": self.host, "port": self.port, "user": USER}) + "\n")

    def _create_databases(self) -> None:
        # autocommit (connect's): CREATE DATABASE cannot run inside a transaction
        connection = connect(self.url("postgres", for_clients=False), "the team database", self.environment())
        try:
            with connection.cursor() as cursor:
                for name in DATABASES:
                    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cursor.fetchone() is None:
                        cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()

    def _running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and self._run(
            "pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def _account(self) -> dict:
        """Run PostgreSQL's programs as the service account when we are root (it refuses to run as root)."""
        if os.geteuid() != 0:
            return {}
        try:
            account = pwd.getpwnam(SERVICE_ACCOUNT)
        except KeyError:
            raise ImgtransError(f"PostgreSQL does not run as root and there is no '{SERVICE_ACCOUNT}' account; "
                                "run `imgtrans server` as an ordinary user") from None
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def _hand_over(self, *paths: Path) -> None:
        account = self._account()
        for path in paths:
            if account:
                os.chown(path, account["user"], account["group"])
        if account and self._run("test", "-w", str(self.data), check=False, on_path=True).returncode != 0:
            raise ImgtransError(f"PostgreSQL runs as '{SERVICE_ACCOUNT}' under root and cannot reach {self.data}: "
                                f"let others traverse its parent folders (chmod o+x) or choose another --data-dir")

    def _run(self, program: str, *args: str, check: bool = True, on_path: bool = False) -> subprocess.CompletedProcess:
        """One of PostgreSQL's programs (or, `on_path`, a system one) as the cluster's account; its error as one
        line."""
        executable = program if on_path else str(self.bin / program)
        result = subprocess.run([executable, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                cwd="/", **self._account())
        if check and result.returncode != 0:
            lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
            detail = lines[-1].strip() if lines else f"exit status {result.returncode}"
            raise ImgtransError(f"PostgreSQL's {program} failed in {self.data}: {detail}"
                                + (f" (see {self.log})" if self.log.exists() else ""))
        return result
