package billing

// CrashAfterSend makes SyncTenant stop after Lago accepted a batch and
// before it is marked, as a process killed there would.
func (s *Syncer) CrashAfterSend(crash func() bool) { s.crashAfterSend = crash }
