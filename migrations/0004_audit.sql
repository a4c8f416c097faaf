-- The audit events of every node (the same records as each node's audit.jsonl), for
-- `ferryd log --database-url`. The columns are the event's fields, for the filters and for
-- SQL by hand; `event` is the whole record, as the node wrote it. `id` orders the events of
-- one node that share a millisecond: each node inserts its events in order.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    time        timestamptz NOT NULL,
    node        text NOT NULL,
    session     bigint NOT NULL,
    peer        text NOT NULL,
    user_name   text,
    kind        text NOT NULL,
    command     text,
    path        text,
    target      text,
    bytes       bigint,
    duration_ms bigint,
    code        integer,
    ascii       boolean,
    complete    boolean,
    count       bigint,
    event       jsonb NOT NULL
);
-- `ferryd log` reads the newest events first, filtered by user, kind or node.
CREATE INDEX audit_log_time ON audit_log (time, id);
CREATE INDEX audit_log_user_time ON audit_log (user_name, time, id);
CREATE INDEX audit_log_kind_time ON audit_log (kind, time, id);
CREATE INDEX audit_log_node_time ON audit_log (node, time, id);
