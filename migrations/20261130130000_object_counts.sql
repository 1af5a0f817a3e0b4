-- The Configurations screens count a domain's provisioned users and groups on every view; this
-- index answers that without reading the objects (150,000 rows: from ~200 ms to ~20 ms).
-- The end-of-cycle queries name their own partial indexes (INDEXED BY), so this one cannot
-- displace them.
CREATE INDEX directory_objects_counts ON directory_objects (domain, kind) WHERE provisioned = 1;
