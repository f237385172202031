DROP INDEX sessions_request;
ALTER TABLE sessions DROP COLUMN request_id;
