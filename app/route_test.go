package app_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/agentvoicebox/avb/apierror"
	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
	"github.com/agentvoicebox/avb/internal/testenv"
	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/voice/calllimit"
)

// A browser-path request for a call whose slot names an instance that
// refuses connections, or one that accepts and never answers, gets
// unavailable/session_not_live, within the forward's bound.
func TestForwardToAHolderThatIsGone(t *testing.T) {
	t.Parallel()
	p := newPlatform(t)
	ten := p.tenant("route", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"rt","scopes":["API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))["secret"].(string)
	client := avbv1connect.NewVoiceServiceClient(http.DefaultClient, p.base, withKey(key))

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
	limiter := calllimit.New(testenv.RedisClient(t), 10)
	for name, c := range map[string]struct {
		addr   string
		within time.Duration
	}{
		"refused": {fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), time.Second},
		"hung":    {"http://" + hung.Addr().String(), 3 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			session := uuid.NewString()
			release, err := limiter.Acquire(context.Background(), ten.ID.String(), session, c.addr+"#gone")
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			start := time.Now()
			_, err = client.SendAudio(context.Background(), connect.NewRequest(&avbv1.SendAudioRequest{SessionId: session, Audio: make([]byte, 640)}))
			took := time.Since(start)
			if connect.CodeOf(err) != connect.CodeUnavailable || apierror.Reason(err) != "session_not_live" || took > c.within {
				t.Fatalf("after %v: %v (%s)", took, err, apierror.Reason(err))
			}
			t.Logf("answered after %v", took.Round(time.Millisecond))
		})
	}
	// A session nobody holds is not live, as before.
	_, err = client.SendAudio(context.Background(), connect.NewRequest(&avbv1.SendAudioRequest{SessionId: uuid.NewString(), Audio: make([]byte, 640)}))
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || apierror.Reason(err) != "session_not_live" {
		t.Fatalf("unheld session: %v", err)
	}
}
