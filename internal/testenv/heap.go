package testenv

import (
	"runtime"
	"sync/atomic"
	"time"
)

// HeapWatch samples the heap in use while a measured piece of work runs.
type HeapWatch struct {
	// Before is the heap in use (after a GC) when the watch started.
	Before runtime.MemStats
	peak   atomic.Uint64
	done   chan struct{}
	ended  chan struct{}
}

// WatchHeap collects garbage, notes the heap, and samples it every 20 ms
// until Stop.
func WatchHeap() *HeapWatch {
	w := &HeapWatch{done: make(chan struct{}), ended: make(chan struct{})}
	runtime.GC()
	runtime.ReadMemStats(&w.Before)
	w.peak.Store(w.Before.HeapInuse)
	go func() {
		defer close(w.ended)
		var m runtime.MemStats
		for {
			select {
			case <-w.done:
				return
			case <-time.After(20 * time.Millisecond):
				runtime.ReadMemStats(&m)
				if m.HeapInuse > w.peak.Load() {
					w.peak.Store(m.HeapInuse)
				}
			}
		}
	}()
	return w
}

// Stop ends sampling and returns the heap's peak in use and the bytes
// allocated since the start.
func (w *HeapWatch) Stop() (peak uint64, allocated uint64) {
	close(w.done)
	<-w.ended
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return max(w.peak.Load(), m.HeapInuse), m.TotalAlloc - w.Before.TotalAlloc
}
