-- The audit page reads events across sessions, newest first, and counts
-- them by kind (refusals in /metrics): without these, each is a full scan.
CREATE INDEX session_events_at ON session_events (at DESC, session_id DESC, seq DESC);
CREATE INDEX session_events_kind ON session_events (kind);
