-- The state the nodes of a cluster share (src/state/postgres/). Rows that belong to a run of a
-- node carry its `instance` (nodes.instance): once that instance's heartbeat is older than the
-- lease, every node's sweeper deletes them, so what a crashed run held is given back.

-- Failed logins, one row each, counted over every node within the ban window.
CREATE TABLE state_failures (
    ip       text NOT NULL,
    instance text NOT NULL,
    at       timestamptz NOT NULL
);
CREATE INDEX state_failures_ip_at ON state_failures (ip, at);

-- Bans, decided when the cluster-wide count of failures reaches ban_after_failures.
CREATE TABLE state_bans (
    ip    text PRIMARY KEY,
    until timestamptz NOT NULL
);

-- Registrations per address, for the hourly cap; `seq` tells one node's rows apart, so one
-- given back is the one deleted.
CREATE TABLE state_registrations (
    ip       text NOT NULL,
    instance text NOT NULL,
    seq      bigint NOT NULL,
    at       timestamptz NOT NULL,
    PRIMARY KEY (instance, seq)
);
CREATE INDEX state_registrations_ip_at ON state_registrations (ip, at);

-- Each instance's live counts: sessions per address ('address') and per user ('user'),
-- transfers per user ('transfer').
CREATE TABLE state_counts (
    instance text NOT NULL,
    kind     text NOT NULL,
    key      text NOT NULL,
    n        integer NOT NULL,
    PRIMARY KEY (instance, kind, key)
);

-- Exclusive leases: write locks ('write', the storage's key of the file) and quota claims
-- ('claim', user and file). `token` names one taking, so a late delete of an earlier one
-- never frees a later one.
CREATE TABLE state_locks (
    kind     text NOT NULL,
    key      bytea NOT NULL,
    instance text NOT NULL,
    token    bigint NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
CREATE INDEX state_locks_instance ON state_locks (instance);

-- What running uploads hold reserved against a user's quota, per instance.
CREATE TABLE quota_reservations (
    instance  text NOT NULL,
    user_name text NOT NULL,
    bytes     bigint NOT NULL CHECK (bytes >= 0),
    files     bigint NOT NULL CHECK (files >= 0),
    PRIMARY KEY (instance, user_name)
);
CREATE INDEX quota_reservations_user ON quota_reservations (user_name);

-- What each account's home holds (the usage ledger of a cluster); `dirty` while a change
-- runs, as in the ledger file of a single server.
CREATE TABLE quota_usage (
    user_name text PRIMARY KEY,
    bytes     bigint NOT NULL CHECK (bytes >= 0),
    files     bigint NOT NULL CHECK (files >= 0),
    dirty     boolean NOT NULL DEFAULT false
);
