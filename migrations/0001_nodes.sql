-- The nodes of a cluster. `instance` names one run of a node (a restart is a new instance):
-- leases and reservations belong to an instance, so what a crashed run held is swept once its
-- heartbeat is older than the lease time, even when the node has started again meanwhile.
CREATE TABLE nodes (
    name         text PRIMARY KEY,
    instance     text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
