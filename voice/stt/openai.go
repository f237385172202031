package stt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"

	"github.com/agentvoicebox/avb/platform/secret"
	"github.com/agentvoicebox/avb/voice/wav"
)

// OpenAI transcribes with any server speaking the OpenAI audio
// transcriptions API (OpenAI, faster-whisper servers, LocalAI ...). The API
// takes whole files, so a session buffers its utterance and uploads it at
// Finish; it has no partial hypotheses.
type OpenAI struct {
	BaseURL string
	APIKey  *secret.Value // nil: no Authorization header
	Model   string        // e.g. "whisper-1"
	Client  *http.Client
	// MaxSeconds bounds one utterance's buffer (default 120 s).
	MaxSeconds int
}

// Start implements Transcriber.
func (o *OpenAI) Start(ctx context.Context, opts Options) (Session, error) {
	max := o.MaxSeconds
	if max <= 0 {
		max = 120
	}
	return &openaiSession{o: o, ctx: ctx, opts: opts, max: max * SampleRate}, nil
}

type openaiSession struct {
	o    *OpenAI
	ctx  context.Context
	opts Options
	pcm  []int16
	max  int
	done bool
}

// ErrUtteranceTooLong: more audio than one upload may hold.
var ErrUtteranceTooLong = errors.New("stt: utterance longer than the transcription limit")

func (s *openaiSession) Write(samples []int16) error {
	if s.done {
		return errors.New("stt: session finished")
	}
	if len(s.pcm)+len(samples) > s.max {
		return ErrUtteranceTooLong
	}
	s.pcm = append(s.pcm, samples...)
	return nil
}

func (s *openaiSession) Partial() string { return "" }

func (s *openaiSession) Close() { s.done, s.pcm = true, nil }

func (s *openaiSession) Finish() (string, error) {
	if s.done {
		return "", errors.New("stt: session finished")
	}
	s.done = true
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, err := mw.CreateFormFile("file", "utterance.wav")
	if err != nil {
		return "", err
	}
	if err := wav.Write(fw, s.pcm, SampleRate); err != nil {
		return "", err
	}
	_ = mw.WriteField("model", s.o.Model)
	_ = mw.WriteField("response_format", "json")
	if s.opts.Language != "" {
		_ = mw.WriteField("language", strings.SplitN(s.opts.Language, "-", 2)[0])
	}
	if len(s.opts.Phrases) > 0 {
		_ = mw.WriteField("prompt", strings.Join(s.opts.Phrases, ". "))
	}
	if err := mw.Close(); err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, strings.TrimSuffix(s.o.BaseURL, "/")+"/audio/transcriptions", &body)
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	if s.o.APIKey.Get() != "" {
		req.Header.Set("Authorization", "Bearer "+s.o.APIKey.Get())
	}
	client := s.o.Client
	if client == nil {
		client = http.DefaultClient
	}
	res, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("stt: %w", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("stt: transcription server answered %d: %s", res.StatusCode, strings.TrimSpace(string(b)))
	}
	var out struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", fmt.Errorf("stt: bad transcription response: %w", err)
	}
	return strings.TrimSpace(out.Text), nil
}
