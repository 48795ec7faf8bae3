-- Continuous learning: the prediction log's figures (model, latency, tokens, cost), the loop's
-- settings and state per model, its decisions, and the lock that lets one server at a time run
-- a model's loop. Rows logged before this migration have no `model` and are not learned from.
ALTER TABLE predictions ADD COLUMN model TEXT;
ALTER TABLE predictions ADD COLUMN latency_ms DOUBLE PRECISION;
ALTER TABLE predictions ADD COLUMN prompt_tokens BIGINT;
ALTER TABLE predictions ADD COLUMN completion_tokens BIGINT;
ALTER TABLE predictions ADD COLUMN cost_usd DOUBLE PRECISION;
CREATE INDEX IF NOT EXISTS predictions_model ON predictions (model, created_at);
CREATE INDEX IF NOT EXISTS feedback_updated ON feedback (updated_at);
CREATE TABLE IF NOT EXISTS learning (
    model TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    state TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS learning_events (
    event_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS learning_events_model ON learning_events (model, at);
CREATE TABLE IF NOT EXISTS learning_locks (
    model TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
)
