-- The dashboard's attention strip counts sessions of a status that ended
-- in the last day: an index range instead of a look at every such row.
CREATE INDEX sessions_status_ended ON sessions (status, ended_at);
