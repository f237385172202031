package stt_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/agentvoicebox/avb/voice/stt"
	"github.com/agentvoicebox/avb/voice/wav"
)

func TestOpenAITranscription(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, _, err := r.FormFile("file")
		if err != nil || r.FormValue("model") != "whisper-1" || r.URL.Path != "/v1/audio/transcriptions" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		pcm, rate, err := wav.Read(f)
		if err != nil || rate != 16000 || len(pcm) != 32000 {
			http.Error(w, "bad audio", http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte(`{"text":" please book a meeting "}`))
	}))
	defer srv.Close()
	o := &stt.OpenAI{BaseURL: srv.URL + "/v1", Model: "whisper-1"}
	s, err := o.Start(context.Background(), stt.Options{Phrases: []string{"book a meeting"}})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Write(make([]int16, 16000))
	_ = s.Write(make([]int16, 16000))
	text, err := s.Finish()
	if err != nil || text != "please book a meeting" {
		t.Fatalf("%q %v", text, err)
	}
	long, _ := (&stt.OpenAI{BaseURL: srv.URL, MaxSeconds: 1}).Start(context.Background(), stt.Options{})
	if err := long.Write(make([]int16, 17000)); err == nil {
		t.Fatal("unbounded buffer")
	}
}
