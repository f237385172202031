package tts_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/agentvoicebox/avb/voice/tts"
)

func TestOpenAISpeechStreamsPCM(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		if r.URL.Path != "/v1/audio/speech" || body["response_format"] != "pcm" || body["voice"] != "alloy" || body["input"] != "Hello." {
			http.Error(w, `{"error":{"message":"bad request"}}`, http.StatusBadRequest)
			return
		}
		pcm := make([]byte, 0, 24000*2)
		for i := range 24000 { // one second
			pcm = binary.LittleEndian.AppendUint16(pcm, uint16(int16(i%100)))
		}
		f := w.(http.Flusher)
		for i := 0; i < len(pcm); i += 4801 { // odd chunks split samples
			_, _ = w.Write(pcm[i:min(i+4801, len(pcm))])
			f.Flush()
		}
	}))
	defer srv.Close()
	o := &tts.OpenAI{BaseURL: srv.URL + "/v1", Model: "tts-1", Voice: "alloy"}
	var got []int16
	if err := o.Synthesize(context.Background(), tts.Request{Text: "Hello."}, func(s []int16) error { got = append(got, s...); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 24000 || got[101] != 1 || got[199] != 99 {
		t.Fatalf("%d samples, [101]=%d", len(got), got[101])
	}
	if err := o.Synthesize(context.Background(), tts.Request{Text: "other"}, func([]int16) error { return nil }); err == nil {
		t.Fatal("server error not reported")
	}
}
