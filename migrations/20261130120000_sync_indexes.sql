-- The end of every cycle looks for deletion candidates, purges gone objects and counts what is
-- present; on a 150,000-object domain these must not scan the wide rows.
CREATE INDEX directory_objects_deletion_candidates ON directory_objects (domain)
    WHERE provisioned = 1 AND (gone = 1 OR in_scope = 0);
CREATE INDEX directory_objects_gone ON directory_objects (domain) WHERE gone = 1 AND provisioned = 0;
CREATE INDEX directory_objects_presence ON directory_objects (domain, gone);
