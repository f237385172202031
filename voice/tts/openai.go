package tts

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/agentvoicebox/avb/platform/secret"
)

// OpenAI speaks with any server speaking the OpenAI audio speech API. It
// asks for raw PCM (24 kHz, 16-bit little-endian mono) and emits it as it
// streams in.
type OpenAI struct {
	BaseURL string
	APIKey  *secret.Value // nil: no Authorization header
	Model   string        // e.g. "tts-1"
	Voice   string        // default voice, e.g. "alloy"
	Client  *http.Client
}

// SampleRate implements Synthesizer: the API's PCM is 24 kHz.
func (o *OpenAI) SampleRate() int { return 24000 }

// Synthesize implements Synthesizer.
func (o *OpenAI) Synthesize(ctx context.Context, req Request, emit func([]int16) error) error {
	if req.Text == "" {
		return ErrEmptyText
	}
	voice := req.Voice
	if voice == "" {
		voice = o.Voice
	}
	b, _ := json.Marshal(map[string]string{"model": o.Model, "input": req.Text, "voice": voice, "response_format": "pcm"})
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(o.BaseURL, "/")+"/audio/speech", bytes.NewReader(b))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	if o.APIKey.Get() != "" {
		hreq.Header.Set("Authorization", "Bearer "+o.APIKey.Get())
	}
	client := o.Client
	if client == nil {
		client = http.DefaultClient
	}
	res, err := client.Do(hreq)
	if err != nil {
		return fmt.Errorf("tts: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 2048))
		return fmt.Errorf("tts: speech server answered %d: %s", res.StatusCode, strings.TrimSpace(string(msg)))
	}
	buf := make([]byte, 4800) // 100 ms
	var carry []byte
	for {
		n, rerr := res.Body.Read(buf)
		data := append(carry, buf[:n]...)
		whole := len(data) &^ 1
		if whole > 0 {
			samples := make([]int16, whole/2)
			for i := range samples {
				samples[i] = int16(binary.LittleEndian.Uint16(data[2*i:]))
			}
			if err := emit(samples); err != nil {
				return err
			}
		}
		carry = append(carry[:0], data[whole:]...)
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("tts: reading speech: %w", rerr)
		}
	}
}
