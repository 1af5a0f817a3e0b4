-- The directories (domains) each agent serves, as reported by `agent add-directory` and heartbeats,
-- kept so the Agents page shows them across console restarts. A JSON array of domain names.
ALTER TABLE agent ADD COLUMN domains_json TEXT NOT NULL DEFAULT '[]';
