package voicecall_test

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/sdk/go/voicecall"
)

// An instance that refuses connections fails the call at once; one that
// accepts and answers nothing fails it within OpenTimeout.
func TestDialAnInstanceThatIsGone(t *testing.T) {
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + free.Addr().String()
	free.Close()
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	go func() { // accepts, reads nothing, answers nothing
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for name, c := range map[string]struct {
		url    string
		within time.Duration
	}{
		"refused": {refused, 200 * time.Millisecond},
		"hung":    {"http://" + hung.Addr().String(), 1500 * time.Millisecond},
	} {
		t.Run(name, func(t *testing.T) {
			client := avbv1connect.NewVoiceServiceClient(http.DefaultClient, c.url, connect.WithGRPC())
			start := time.Now()
			_, err := voicecall.Dial(context.Background(), voicecall.Options{Endpoints: []avbv1connect.VoiceServiceClient{client},
				Start: &avbv1.SessionStart{}, OpenTimeout: time.Second})
			if took := time.Since(start); err == nil || took > c.within {
				t.Fatalf("%s: after %v: %v", name, took, err)
			}
			t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
		})
	}
}
