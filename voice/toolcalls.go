package voice

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/agentvoicebox/avb/voice/llm"
	"github.com/agentvoicebox/avb/voice/tools"
)

// Tool calls during a reply. When the model asks for tools, the reply's
// generation runs them (several at once when asked together), gives the
// results back to the model and goes on with its answer. What was said
// before the call is spoken at once; a filler sentence covers a slow tool;
// caller speech that interrupts the reply cancels the tools still running.

// maxToolRounds bounds how many times one reply may go back to its tools.
const maxToolRounds = 8

// DefaultFillerDelay is how long tools run before the filler sentence.
const DefaultFillerDelay = 700 * time.Millisecond

// ToolRunner runs the tools that run on the server's side of the call
// (webhooks); the engine itself runs client and built-in tools.
type ToolRunner interface {
	RunTool(ctx context.Context, t tools.Tool, call llm.ToolCall) (string, error)
}

// ErrToolCallNotOpen: a tool result names no call the session is waiting on.
var ErrToolCallNotOpen = errors.New("no open tool call has that id (it ended, timed out, or belongs to another session)")

// ToolEvent describes a tool call in ToolCallStarted, ToolCallDone and
// TransferRequested events.
type ToolEvent struct {
	ID        string
	Name      string
	Arguments string
	Kind      tools.Kind
	// ToolCallDone: how it ended, what the model got, and how long it took.
	Outcome string
	Output  string
	Latency time.Duration
	// TransferRequested: where to.
	Target string
}

type toolAnswer struct {
	output  string
	isError bool
}

// ToolResult answers a client tool call this call is waiting on.
func (c *Call) ToolResult(id, output string, isError bool) error {
	c.toolMu.Lock()
	ch, ok := c.pending[id]
	delete(c.pending, id)
	c.toolMu.Unlock()
	if !ok {
		c.emit(Event{Type: Error, Err: fmt.Errorf("tool result for %q: %w", id, ErrToolCallNotOpen)})
		return ErrToolCallNotOpen
	}
	ch <- toolAnswer{output, isError}
	return nil
}

// open registers a client tool call, under a fresh id when the model's
// is missing or already open.
func (c *Call) openToolCall(id string) (string, chan toolAnswer) {
	c.toolMu.Lock()
	defer c.toolMu.Unlock()
	if c.pending == nil {
		c.pending = map[string]chan toolAnswer{}
	}
	if _, taken := c.pending[id]; id == "" || taken {
		id = newCallID()
	}
	ch := make(chan toolAnswer, 1)
	c.pending[id] = ch
	return id, ch
}

func (c *Call) closeToolCall(id string) {
	c.toolMu.Lock()
	delete(c.pending, id)
	c.toolMu.Unlock()
}

func newCallID() string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return "call_" + hex.EncodeToString(b[:])
}

// runTools runs one round of tool calls in parallel and returns the
// results for the model, in the order asked. say speaks a sentence.
func (c *Call) runTools(ctx context.Context, r *response, cfg Config, calls []llm.ToolCall, say func(string) error) []llm.Message {
	results := make([]llm.Message, len(calls))
	// Tools act on the world: a reply the caller may never hear (a
	// preemptive one, or one paused by a possible interruption) runs
	// them only once it is confirmed.
	if !r.waitUnheld() {
		for i, tc := range calls {
			results[i] = llm.Message{Role: "tool", ToolCallID: tc.ID, Content: "cancelled: the reply was dropped"}
		}
		return results
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range calls {
		if calls[i].ID == "" {
			calls[i].ID = newCallID()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = llm.Message{Role: "tool", ToolCallID: calls[i].ID, Content: c.runTool(ctx, r, cfg, calls[i])}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	if cfg.Filler != "" {
		delay := cfg.FillerDelay
		if delay <= 0 {
			delay = DefaultFillerDelay
		}
		t := time.NewTimer(delay)
		select {
		case <-done:
		case <-t.C:
			filler := cfg.Filler + " "
			if c.emitFor(r, Event{Type: TextDelta, ResponseID: r.id, Text: filler}) {
				r.text.WriteString(filler)
				_ = say(cfg.Filler)
			}
		}
		t.Stop()
	}
	<-done
	r.toolTime += time.Since(start)
	r.toolCalls += len(calls)
	return results
}

// runTool runs one call and returns the model's view of its result.
func (c *Call) runTool(ctx context.Context, r *response, cfg Config, tc llm.ToolCall) string {
	start := time.Now()
	info := ToolEvent{ID: tc.ID, Name: tc.Name, Arguments: tc.Arguments}
	opened := false
	finish := func(outcome, output string) string {
		if opened {
			// Closed before it is reported done: a result sent on hearing
			// so is refused (ErrToolCallNotOpen), never taken silently.
			c.closeToolCall(info.ID)
		}
		info.Outcome, info.Output, info.Latency = outcome, output, time.Since(start)
		// Not held back with the reply: the client hears of a cancelled
		// call even though the reply it belonged to was cut.
		ev := info
		c.emit(Event{Type: ToolCallDone, ResponseID: r.id, Tool: &ev})
		return output
	}
	t, ok := findTool(cfg.Tools, tc.Name)
	if !ok {
		return finish(tools.OutcomeError, fmt.Sprintf("error: there is no tool named %q", tc.Name))
	}
	info.Kind = t.Kind
	if t.Schema != nil {
		if err := t.Schema.Validate(tc.Arguments); err != nil {
			return finish(tools.OutcomeInvalid, "error: "+err.Error())
		}
	}
	tctx, cancel := context.WithTimeout(ctx, t.Deadline())
	defer cancel()
	var answer chan toolAnswer
	if t.Kind == tools.Client {
		// Open before the client hears of it: its answer may be quick.
		info.ID, answer = c.openToolCall(tc.ID)
		opened = true
	}
	started := info
	c.emitFor(r, Event{Type: ToolCallStarted, ResponseID: r.id, Tool: &started})
	var out string
	var err error
	switch t.Kind {
	case tools.Client:
		select {
		case a := <-answer:
			out = a.output
			if a.isError {
				err = errors.New(a.output)
			}
		case <-tctx.Done():
			err = tctx.Err()
		}
	case tools.Webhook:
		if c.prov.Tools == nil {
			err = errors.New("webhook tools are not available on this server")
		} else {
			out, err = c.prov.Tools.RunTool(tctx, t, llm.ToolCall{ID: info.ID, Name: tc.Name, Arguments: tc.Arguments})
		}
	case tools.EndCall:
		r.endCall.Store(true)
		out = `{"ok":true,"note":"the call ends after this reply"}`
	case tools.Transfer:
		tr := info
		tr.Target = t.Target
		c.emitFor(r, Event{Type: TransferRequested, ResponseID: r.id, Tool: &tr})
		out = fmt.Sprintf(`{"ok":true,"note":"transferring the caller to %s"}`, t.Target)
	}
	switch {
	case err == nil:
		return finish(tools.OutcomeOK, out)
	case ctx.Err() != nil:
		return finish(tools.OutcomeCancelled, "cancelled: the caller spoke before the tool answered")
	case errors.Is(tctx.Err(), context.DeadlineExceeded):
		return finish(tools.OutcomeTimeout, fmt.Sprintf("error: the tool did not answer within %s", t.Deadline()))
	default:
		return finish(tools.OutcomeError, "error: "+err.Error())
	}
}

func findTool(ts []tools.Tool, name string) (tools.Tool, bool) {
	for _, t := range ts {
		if t.Name == name {
			return t, true
		}
	}
	return tools.Tool{}, false
}

// waitUnheld waits for a hold on r to end; false if r stops first.
func (r *response) waitUnheld() bool {
	for {
		r.mu.Lock()
		held, wait := r.held, r.unheld
		r.mu.Unlock()
		if !held {
			return r.ctx.Err() == nil
		}
		select {
		case <-wait:
		case <-r.ctx.Done():
			return false
		}
	}
}
