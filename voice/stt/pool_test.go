package stt

import (
	"context"
	"testing"
	"time"
)

// Under load the pool keeps as many decoders as were in use at once, so
// none is freed only to be made again; when the load goes, it shrinks by
// a quarter a minute back to its floor.
func TestDecoderPoolFollowsPeakUse(t *testing.T) {
	p := NewPocketsphinx("", 2)
	opts := Options{Phrases: []string{"hello", "cancel my meeting"}}
	open := func(n int) []Session {
		var out []Session
		for range n {
			s, err := p.Start(context.Background(), opts)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	g := grammar(opts.Phrases)
	idle := func() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.idle[g]) }
	for _, s := range open(12) {
		s.Close()
	}
	if n := idle(); n != 12 {
		t.Fatalf("%d idle after 12 at once, want 12", n)
	}
	ss := open(12)
	if n := idle(); n != 0 {
		t.Fatalf("%d idle: decoders were made although 12 were idle", n)
	}
	for _, s := range ss {
		s.Close()
	}
	// Two minutes without a new peak: each release finds it decayed.
	p.mu.Lock()
	p.peakAt[g] = time.Now().Add(-2 * time.Minute)
	p.mu.Unlock()
	ss = open(12)
	for _, s := range ss {
		s.Close()
	}
	if n := idle(); n >= 12 || n < 2 {
		t.Fatalf("%d idle after the load went, want fewer than 12 and at least the floor of 2", n)
	}
}

// Calls opening together each get a decoder made ahead of their first
// turn, not one for all of them.
func TestPrepareCoversCallsOpeningTogether(t *testing.T) {
	p := NewPocketsphinx("", 2)
	phrases := []string{"hello", "book a meeting"}
	g := grammar(phrases)
	for range 6 {
		p.Prepare(phrases)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		p.mu.Lock()
		idle, warming := len(p.idle[g]), p.warming[g]
		p.mu.Unlock()
		if idle == 6 && warming == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle, %d being made, want 6 idle", idle, warming)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The six calls start: no decoder is made on their turn's path.
	var ss []Session
	for range 6 {
		s, err := p.Start(context.Background(), Options{Phrases: phrases})
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
	}
	p.mu.Lock()
	left := len(p.idle[g])
	p.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d idle after six starts", left)
	}
	for _, s := range ss {
		s.Close()
	}
}
