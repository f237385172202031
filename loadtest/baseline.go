package loadtest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
)

// bareEcho is the ceiling of the stack: a connect-go Converse handler that
// echoes each audio message as it arrives, with no authentication, session,
// validation, decoding or metrics. Passthrough load against it, in the
// same run, is what avb's media path is compared with.
type bareEcho struct {
	avbv1connect.UnimplementedVoiceServiceHandler
}

func (bareEcho) Converse(ctx context.Context, stream *connect.BidiStream[avbv1.ConverseRequest, avbv1.ConverseResponse]) error {
	if _, err := stream.Receive(); err != nil {
		return nil
	}
	if err := stream.Send(&avbv1.ConverseResponse{Event: &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_SessionStarted{SessionStarted: &avbv1.SessionStarted{}}}}); err != nil {
		return err
	}
	for {
		msg, err := stream.Receive()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		a := msg.GetAudio().GetAudio()
		if a == nil {
			continue
		}
		ev := &avbv1.ResponseAudioDelta{Audio: a, AudioMs: float64(len(a)) * 1000 / (2 * rate)}
		if err := stream.Send(&avbv1.ConverseResponse{Event: &avbv1.VoiceEvent{Event: &avbv1.VoiceEvent_ResponseAudioDelta{ResponseAudioDelta: ev}}}); err != nil {
			return err
		}
	}
}

// StartBaseline serves the bare echo handler on a loopback port over h2c
// and returns its URL; stop shuts it down.
func StartBaseline() (url string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(avbv1connect.NewVoiceServiceHandler(bareEcho{}))
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: &p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return "http://" + l.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
