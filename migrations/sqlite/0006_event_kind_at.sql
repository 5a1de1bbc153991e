-- The attention strip counts refusals of the last day: a range of one
-- index (kind, at) instead of every refusal ever made.
CREATE INDEX session_events_kind_at ON session_events (kind, at);
