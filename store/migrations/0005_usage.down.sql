DROP TABLE session_transcripts;
DROP TABLE usage_ledger;
