DROP FUNCTION sessions_awaiting_workflow(interval, integer);
DROP INDEX sessions_awaiting_workflow;
ALTER TABLE sessions DROP COLUMN workflow_started_at;
