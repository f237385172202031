DROP TABLE voice_jobs;
DROP FUNCTION rollup_usage(timestamptz);
DROP FUNCTION expire_stale_sessions(interval);
DROP TABLE usage_hourly;
