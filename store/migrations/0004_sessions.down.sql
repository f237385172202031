DROP TABLE session_events;
DROP TABLE sessions;
