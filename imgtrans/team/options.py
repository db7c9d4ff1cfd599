"""The options of the `server` command (importable without torch)."""

from __future__ import annotations

from dataclasses import dataclass

from imgtrans.config import opt


@dataclass
class ServerConfig:
    data_dir: str = opt("team-server", "the stack's folder: its PostgreSQL cluster (created on the first start), "
                                       "password file, server log and, by default, the artifacts")
    host: str = opt("127.0.0.1", "address the tracking server and the local database listen on; 0.0.0.0 = every "
                                 "interface (then put authentication in front: README, Team setup)")
    port: int = opt(5000, "tracking server port", ge=1, le=65535)
    db_port: int = opt(0, "port of the local PostgreSQL cluster when it is created; 0 = a free one (recorded in "
                          "DATA_DIR for later starts)", ge=0, le=65535)
    backend_store_uri: str = opt("", "an existing PostgreSQL database for the runs instead of the local cluster: "
                                     "postgresql://USER@HOST:PORT/DB, its password in PGPASSWORD or PGPASSFILE")
    optuna_storage: str = opt("", "with backend_store_uri: the database for Optuna studies; default: database "
                                  "'optuna' on the same server")
    artifacts_destination: str = opt("", "where the server keeps artifacts: a folder, or an S3-compatible bucket "
                                         "(s3://bucket/prefix, endpoint in MLFLOW_S3_ENDPOINT_URL); default "
                                         "DATA_DIR/artifacts")
    workers: int = opt(2, "tracking server worker processes", ge=1)
