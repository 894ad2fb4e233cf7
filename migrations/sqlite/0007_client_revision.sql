-- Every client update names the revision it was made from and bumps it: an update made from a
-- copy read before another change fails (and the service reads again and reapplies its change)
-- instead of writing back the other change's fields. Before this, two concurrent admin changes
-- (say a secret rotation and a PATCH of the name) could lose one of them.
ALTER TABLE clients ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
