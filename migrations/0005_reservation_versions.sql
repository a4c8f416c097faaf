-- A reservation row is written whole (what one instance holds for a user), each write with a
-- number that only grows, so a late write never replaces a newer one: a reservation whose
-- answer was lost, a give-back that waited out an outage in the node's outbox.
ALTER TABLE quota_reservations ADD COLUMN version bigint NOT NULL DEFAULT 0;
