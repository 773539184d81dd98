"""The controller's schema as numbered migrations; each runs once, in order, in its own transaction.

Never edit a migration that has shipped: add a new one. ``schema_version`` records what ran.
"""

from __future__ import annotations

# A random UUID (version 4) computed by SQLite, so that a migration can create one in its own transaction.
UUID4_SQL = (
    "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'"
    " || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))"
)

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "initial schema",
        """
        CREATE TABLE nodes (
            node_id    TEXT PRIMARY KEY,
            ip         TEXT NOT NULL DEFAULT '',
            labels     TEXT NOT NULL DEFAULT '{}',
            last_seen  REAL NOT NULL
        );

        CREATE TABLE artifacts (
            artifact_id       TEXT PRIMARY KEY,
            app_name          TEXT NOT NULL,
            version           TEXT NOT NULL,
            type              TEXT NOT NULL CHECK (type IN ('zip', 'image')),
            path              TEXT NOT NULL DEFAULT '',
            sha256            TEXT NOT NULL DEFAULT '',
            size_bytes        INTEGER NOT NULL DEFAULT 0,
            created_at        INTEGER NOT NULL,
            image_repository  TEXT NOT NULL DEFAULT '',
            image_tag         TEXT NOT NULL DEFAULT '',
            port_mappings     TEXT NOT NULL DEFAULT '',
            services          TEXT NOT NULL DEFAULT '[]',
            UNIQUE (app_name, version)
        );
        CREATE UNIQUE INDEX artifacts_path ON artifacts(path) WHERE path != '';

        CREATE TABLE deployments (
            deployment_id  TEXT PRIMARY KEY,
            name           TEXT NOT NULL UNIQUE,
            labels         TEXT NOT NULL DEFAULT '{}',
            status         TEXT NOT NULL DEFAULT 'Stopped' CHECK (status IN ('Running', 'Stopped')),
            created_at     REAL NOT NULL,
            updated_at     REAL NOT NULL
        );

        -- one row per entry of a deployment: what to run and how (the replicas live in assignments)
        CREATE TABLE deployment_entries (
            entry_id        INTEGER PRIMARY KEY AUTOINCREMENT,
            deployment_id   TEXT NOT NULL REFERENCES deployments(deployment_id) ON DELETE CASCADE,
            position        INTEGER NOT NULL,
            artifact_id     TEXT NOT NULL REFERENCES artifacts(artifact_id) ON DELETE RESTRICT,
            start_cmd       TEXT NOT NULL DEFAULT '',
            runtime         TEXT NOT NULL DEFAULT '',
            image           TEXT NOT NULL DEFAULT '',
            env             TEXT NOT NULL DEFAULT '{}',
            memory          TEXT NOT NULL DEFAULT '',
            cpus            REAL,
            network_mode    TEXT NOT NULL DEFAULT '',
            restart_policy  TEXT NOT NULL DEFAULT '',
            ports           TEXT NOT NULL DEFAULT '[]',
            UNIQUE (deployment_id, position)
        );
        CREATE INDEX deployment_entries_artifact ON deployment_entries(artifact_id);

        -- one row per instance; desired 'Lost' marks an instance replaced by failover (never revived)
        CREATE TABLE assignments (
            seq             INTEGER PRIMARY KEY AUTOINCREMENT,
            instance_id     TEXT NOT NULL UNIQUE,
            deployment_id   TEXT NOT NULL REFERENCES deployments(deployment_id) ON DELETE CASCADE,
            entry_id        INTEGER NOT NULL REFERENCES deployment_entries(entry_id) ON DELETE CASCADE,
            node_id         TEXT NOT NULL REFERENCES nodes(node_id) ON DELETE RESTRICT,
            desired         TEXT NOT NULL CHECK (desired IN ('Running', 'Stopped', 'Lost')),
            created_at      REAL NOT NULL,
            replaced_by     TEXT,
            phase           TEXT NOT NULL DEFAULT '',
            healthy         INTEGER NOT NULL DEFAULT 0,
            message         TEXT NOT NULL DEFAULT '',
            exit_code       INTEGER,
            restarts        INTEGER NOT NULL DEFAULT 0,
            last_report_at  REAL NOT NULL DEFAULT 0
        );
        CREATE INDEX assignments_node ON assignments(node_id, desired);
        CREATE INDEX assignments_deployment ON assignments(deployment_id);
        CREATE INDEX assignments_entry ON assignments(entry_id);

        -- status history, bounded per instance by CONTROLLER_STATUS_HISTORY
        CREATE TABLE statuses (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            instance_id  TEXT NOT NULL REFERENCES assignments(instance_id) ON DELETE CASCADE,
            phase        TEXT NOT NULL,
            healthy      INTEGER NOT NULL,
            message      TEXT NOT NULL DEFAULT '',
            exit_code    INTEGER,
            restarts     INTEGER NOT NULL DEFAULT 0,
            ts_unix      REAL,
            received_at  REAL NOT NULL
        );
        CREATE INDEX statuses_instance ON statuses(instance_id, id);

        CREATE TABLE endpoints (
            service_name  TEXT NOT NULL,
            instance_id   TEXT NOT NULL,
            node_id       TEXT NOT NULL,
            ip            TEXT NOT NULL,
            port          INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
            protocol      TEXT NOT NULL,
            version       TEXT NOT NULL DEFAULT '',
            labels        TEXT NOT NULL DEFAULT '{}',
            healthy       INTEGER NOT NULL DEFAULT 0,
            last_seen     REAL NOT NULL,
            checked_at    REAL,
            reported_at   REAL,
            PRIMARY KEY (service_name, instance_id, ip, port, protocol)
        );
        CREATE INDEX endpoints_instance ON endpoints(instance_id);
        """,
    ),
    (
        2,
        "database identity",
        # One row: the UUID (version 4) that names this database's history. Agents remember it and hold
        # their instances when a controller answers with another one (an empty or replaced database).
        f"""
        CREATE TABLE database_identity (
            singleton    INTEGER PRIMARY KEY CHECK (singleton = 1),
            database_id  TEXT NOT NULL,
            created_at   TEXT NOT NULL
        );
        INSERT INTO database_identity(singleton, database_id, created_at) VALUES (1, {UUID4_SQL}, datetime('now'));
        """,  # noqa: S608 - UUID4_SQL is a constant expression, not input
    ),
    (
        3,
        "node credentials",
        # One row per node that joined: the SHA-256 of its node token (the token itself is never stored).
        # Not tied to the nodes row: a node joins before its first heartbeat creates that row.
        """
        CREATE TABLE node_credentials (
            node_id     TEXT PRIMARY KEY,
            token_hash  TEXT NOT NULL UNIQUE,
            created_at  REAL NOT NULL
        );
        """,
    ),
    (
        4,
        "removed instances",
        # A tombstone for every instance the controller removed (deleted, scaled down, its deployment or
        # node deleted): the feed names them, and an agent removes an instance only when the feed says it
        # was removed, never because it is missing (a database restored from an older backup, for one).
        # A trigger, so that every way a row goes, cascades included, leaves its tombstone.
        """
        CREATE TABLE removed_instances (
            instance_id    TEXT PRIMARY KEY,
            node_id        TEXT NOT NULL,
            deployment_id  TEXT NOT NULL,
            removed_at     REAL NOT NULL
        );
        CREATE INDEX removed_instances_node ON removed_instances(node_id);
        CREATE INDEX removed_instances_time ON removed_instances(removed_at);
        CREATE TRIGGER assignment_removed AFTER DELETE ON assignments
        BEGIN
            INSERT OR REPLACE INTO removed_instances(instance_id, node_id, deployment_id, removed_at)
            VALUES (old.instance_id, old.node_id, old.deployment_id, (julianday('now') - 2440587.5) * 86400.0);
        END;
        """,
    ),
    (
        5,
        "placement and revisions",
        # Controller placement: an entry with desired_replicas set is placed by the controller over the nodes
        # its placement admits (NULL: the operator pins replicas per node). Rolling updates: an entry's
        # settings are kept per revision, each instance runs the revision its assignment names (the feed
        # serves it), and a deployment's last rollout is one row. deployment_entries keeps the settings of
        # the deployment's current revision (deployments.revision).
        """
        ALTER TABLE deployments ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE deployments ADD COLUMN update_policy TEXT NOT NULL DEFAULT '{}';
        ALTER TABLE deployment_entries ADD COLUMN desired_replicas INTEGER;
        ALTER TABLE deployment_entries ADD COLUMN placement TEXT NOT NULL DEFAULT '{}';
        CREATE TABLE entry_revisions (
            entry_id        INTEGER NOT NULL REFERENCES deployment_entries(entry_id) ON DELETE CASCADE,
            revision        INTEGER NOT NULL,
            artifact_id     TEXT NOT NULL REFERENCES artifacts(artifact_id) ON DELETE RESTRICT,
            start_cmd       TEXT NOT NULL DEFAULT '',
            runtime         TEXT NOT NULL DEFAULT '',
            image           TEXT NOT NULL DEFAULT '',
            env             TEXT NOT NULL DEFAULT '{}',
            memory          TEXT NOT NULL DEFAULT '',
            cpus            REAL,
            network_mode    TEXT NOT NULL DEFAULT '',
            restart_policy  TEXT NOT NULL DEFAULT '',
            ports           TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (entry_id, revision)
        );
        CREATE INDEX entry_revisions_artifact ON entry_revisions(artifact_id);
        INSERT INTO entry_revisions(entry_id, revision, artifact_id, start_cmd, runtime, image, env, memory, cpus,
                                    network_mode, restart_policy, ports)
            SELECT entry_id, 1, artifact_id, start_cmd, runtime, image, env, memory, cpus, network_mode,
                   restart_policy, ports FROM deployment_entries;
        ALTER TABLE assignments ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE assignments ADD COLUMN revision_at REAL NOT NULL DEFAULT 0;
        ALTER TABLE assignments ADD COLUMN phase_since REAL NOT NULL DEFAULT 0;
        CREATE TABLE rollouts (
            deployment_id      TEXT PRIMARY KEY REFERENCES deployments(deployment_id) ON DELETE CASCADE,
            revision           INTEGER NOT NULL,
            previous_revision  INTEGER NOT NULL,
            state              TEXT NOT NULL CHECK (state IN ('Running', 'Succeeded', 'RolledBack', 'Failed')),
            updated            INTEGER NOT NULL DEFAULT 0,
            healthy            INTEGER NOT NULL DEFAULT 0,
            total              INTEGER NOT NULL DEFAULT 0,
            message            TEXT NOT NULL DEFAULT '',
            started_at         REAL NOT NULL,
            finished_at        REAL
        );
        CREATE INDEX rollouts_state ON rollouts(state);
        """,
    ),
)
