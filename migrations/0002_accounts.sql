-- Accounts and invitation codes, shared by every node. Every change to an account is logged
-- in `account_changes` and announced on the `ferry_accounts` channel (payload: the name) by a
-- trigger, in the transaction that makes it, whoever makes it (a node, `ferryd user`, psql):
-- nodes LISTEN for the announcements and read the log as a backstop for those they missed.
CREATE TABLE accounts (
    name       text PRIMARY KEY,
    hash       text NOT NULL,
    created    text NOT NULL,
    disabled   boolean NOT NULL DEFAULT false,
    read_only  boolean NOT NULL DEFAULT false,
    -- NULL: unlimited.
    quota_bytes bigint CHECK (quota_bytes >= 0),
    quota_files bigint CHECK (quota_files >= 0),
    -- Bumped by every update: how many times the record changed.
    version    bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE account_changes (
    seq  bigserial PRIMARY KEY,
    name text NOT NULL,
    at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_changes_at ON account_changes (at);

CREATE FUNCTION ferry_account_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text := CASE WHEN TG_OP = 'DELETE' THEN OLD.name ELSE NEW.name END;
BEGIN
    INSERT INTO account_changes (name) VALUES (changed);
    PERFORM pg_notify('ferry_accounts', changed);
    RETURN NULL;
END
$$;

CREATE TRIGGER accounts_changed AFTER INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION ferry_account_changed();

CREATE TABLE invites (
    code      text PRIMARY KEY,
    uses_left integer NOT NULL CHECK (uses_left >= 0),
    created   text NOT NULL
);
