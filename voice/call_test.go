package voice_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/voice"
	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/llm"
	"github.com/agentvoicebox/avb/voice/stt"
	"github.com/agentvoicebox/avb/voice/tts"
)

const ask = "please book a meeting for tomorrow at ten"

var (
	askHints   = []string{ask, "cancel my meeting", "hello"}
	replyHints = []string{"sure i booked the meeting for tomorrow at ten", "okay your meeting is cancelled", "hello how can i help you today"}
)

func providers(t testing.TB, model llm.Model) voice.Providers {
	t.Helper()
	e, err := tts.NewEspeak()
	if err != nil {
		t.Fatal(err)
	}
	return voice.Providers{STT: stt.NewPocketsphinx("", 4), LLM: model, TTS: e}
}

// speech synthesizes text in format f, followed by silence.
func speech(t testing.TB, text string, f audio.Format, silenceMS int) []byte {
	t.Helper()
	e, _ := tts.NewEspeak()
	rs := audio.NewResampler(e.SampleRate(), f.SampleRate)
	var pcm []int16
	if err := e.Synthesize(context.Background(), tts.Request{Text: text}, func(s []int16) error {
		pcm = rs.Process(s, pcm)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pcm = append(pcm, make([]int16, f.SampleRate*silenceMS/1000)...)
	b, err := audio.Encode(f, pcm, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stream sends b in 20 ms frames, pace times faster than real time.
func stream(t testing.TB, c *voice.Call, f audio.Format, b []byte, pace int) {
	t.Helper()
	frame := f.BytesFor(20)
	for i := 0; i < len(b); i += frame {
		if err := c.AppendAudio(b[i:min(i+frame, len(b))]); err != nil {
			if !errors.Is(err, voice.ErrClosed) {
				t.Error(err)
			}
			return
		}
		time.Sleep(20 * time.Millisecond / time.Duration(pace))
	}
}

// transcribe recognizes audio in format f against the reply phrases.
func transcribe(t testing.TB, f audio.Format, b []byte) string {
	t.Helper()
	pcm, err := audio.Decode(f, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	pcm = audio.NewResampler(f.SampleRate, 16000).Process(pcm, nil)
	s, err := stt.NewPocketsphinx("", 1).Start(context.Background(), stt.Options{Phrases: replyHints})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Write(pcm)
	text, _ := s.Finish()
	return text
}

func cfg(in, out audio.Format) voice.Config {
	return voice.Config{Input: in, Output: out, Phrases: askHints, Turn: voice.ServerVAD,
		CreateResponse: true, InterruptResponse: true}
}

// A spoken request is detected, transcribed, answered and spoken back; the
// reply audio, recognized again, is the scripted answer. In every wire format.
func TestTurnEndToEnd(t *testing.T) {
	t.Parallel()
	formats := []struct{ in, out audio.Format }{
		{audio.Format{Encoding: audio.PCM16, SampleRate: 16000}, audio.Format{Encoding: audio.PCM16, SampleRate: 24000}},
		{audio.Format{Encoding: audio.MuLaw, SampleRate: 8000}, audio.Format{Encoding: audio.MuLaw, SampleRate: 8000}},
		{audio.Format{Encoding: audio.PCM16, SampleRate: 48000}, audio.Format{Encoding: audio.ALaw, SampleRate: 8000}},
	}
	for _, fm := range formats {
		c, err := voice.New(context.Background(), cfg(fm.in, fm.out), providers(t, llm.DefaultScript))
		if err != nil {
			t.Fatal(err)
		}
		go stream(t, c, fm.in, speech(t, ask, fm.in, 800), 4)
		var got []voice.EventType
		var final, text string
		var out []byte
		var done voice.Event
		timeout := time.After(20 * time.Second)
	collect:
		for {
			select {
			case ev := <-c.Events():
				got = append(got, ev.Type)
				switch ev.Type {
				case voice.TranscriptFinal:
					final = ev.Text
				case voice.TextDelta:
					text += ev.Text
				case voice.AudioDelta:
					out = append(out, ev.Audio...)
				case voice.ResponseDone:
					done = ev
					break collect
				case voice.Error:
					t.Fatal(ev.Err)
				}
			case <-timeout:
				t.Fatalf("no response; events %v", got)
			}
		}
		c.Close()
		if final != ask {
			t.Fatalf("%+v: heard %q", fm, final)
		}
		if text != "Sure. I booked the meeting for tomorrow at ten." || done.Interrupted {
			t.Fatalf("reply %q interrupted=%v", text, done.Interrupted)
		}
		if heard := transcribe(t, fm.out, out); heard != replyHints[0] {
			t.Fatalf("%+v: reply audio says %q", fm, heard)
		}
		m := done.Metrics
		if m.FirstByteSent <= 0 || m.TTSFirstAudio > m.FirstByteSent || done.Usage.OutputTokens == 0 {
			t.Fatalf("metrics %+v usage %+v", m, done.Usage)
		}
		t.Logf("%v -> %v: stt final %s, llm first token %s, tts first audio %s, first byte %s after end of speech",
			fm.in, fm.out, m.STTFinal, m.LLMFirstToken, m.TTSFirstAudio, m.FirstByteSent)
	}
}

// Caller speech during a reply cancels it within a frame, and the reply
// reports how much of its audio could have been heard.
func TestBargeIn(t *testing.T) {
	t.Parallel()
	slow := &llm.Scripted{Rules: []llm.Rule{{Match: []string{"book meeting"}, Reply: strings.Repeat("This is a long answer that goes on. ", 20)}},
		Fallback: "What?", WordDelay: 30 * time.Millisecond}
	f := audio.Format{Encoding: audio.PCM16, SampleRate: 16000}
	c, err := voice.New(context.Background(), cfg(f, f), providers(t, slow))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go stream(t, c, f, speech(t, ask, f, 700), 4)
	var started time.Time
	interrupting := false
	for ev := range c.Events() {
		switch ev.Type {
		case voice.AudioDelta:
			if !interrupting {
				interrupting = true
				go stream(t, c, f, speech(t, "cancel my meeting", f, 0), 1) // real time
			}
		case voice.SpeechStarted:
			if interrupting {
				started = time.Now()
			}
		case voice.ResponseDone:
			if !interrupting {
				t.Fatal("response finished before it could be interrupted")
			}
			if !ev.Interrupted || started.IsZero() {
				t.Fatalf("not interrupted: %+v", ev)
			}
			if d := time.Since(started); d > 20*time.Millisecond {
				t.Fatalf("barge-in took %s after speech was detected, more than one frame", d)
			}
			if ev.PlayedMS <= 0 || ev.PlayedMS > ev.Metrics.AudioOutMS {
				t.Fatalf("played %v ms of %v", ev.PlayedMS, ev.Metrics.AudioOutMS)
			}
			return
		}
	}
	t.Fatal("events ended")
}

func TestLimits(t *testing.T) {
	t.Parallel()
	f := audio.Format{Encoding: audio.PCM16, SampleRate: 48000}
	if _, err := voice.New(context.Background(), voice.Config{Input: audio.Format{Encoding: audio.PCM16, SampleRate: 44100}, Output: f}, voice.Providers{}); err == nil {
		t.Fatal("unsupported format accepted")
	}
	c, err := voice.New(context.Background(), voice.Config{Input: f, Output: f, Turn: voice.Manual}, providers(t, llm.DefaultScript))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.AppendAudio(make([]byte, voice.MaxFrameBytes+2)); !errors.Is(err, voice.ErrFrameTooLarge) {
		t.Fatalf("huge frame: %v", err)
	}
	if err := c.AppendAudio([]byte{1, 2, 3}); err == nil {
		t.Fatal("odd pcm16 length accepted")
	}
	// Ten seconds at once is far beyond the two-second input buffer.
	var overflow error
	for range 40 {
		if overflow = c.AppendAudio(make([]byte, 48000*2/4)); overflow != nil {
			break
		}
	}
	if !errors.Is(overflow, voice.ErrInputOverflow) {
		t.Fatalf("burst: %v", overflow)
	}
}

// Manual turn detection: nothing happens until the client commits.
func TestManualCommit(t *testing.T) {
	t.Parallel()
	f := audio.Format{Encoding: audio.PCM16, SampleRate: 16000}
	conf := cfg(f, f)
	conf.Turn = voice.Manual
	c, err := voice.New(context.Background(), conf, providers(t, llm.DefaultScript))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stream(t, c, f, speech(t, ask, f, 100), 2)
	time.Sleep(100 * time.Millisecond)
	if err := c.Commit(); err != nil {
		t.Fatal(err)
	}
	for ev := range c.Events() {
		switch ev.Type {
		case voice.SpeechStarted:
			t.Fatal("speech events in manual mode")
		case voice.TranscriptFinal:
			if ev.Text != ask {
				t.Fatalf("heard %q", ev.Text)
			}
		case voice.ResponseDone:
			return
		}
	}
}

// failingModel fails its first reply and answers afterwards.
type failingModel struct{ calls int }

func (f *failingModel) Stream(ctx context.Context, req llm.Request, emit func(string) error) (llm.Usage, error) {
	f.calls++
	if f.calls == 1 {
		return llm.Usage{}, errors.New("upstream model timed out")
	}
	return llm.DefaultScript.Stream(ctx, req, emit)
}

// A provider failure is an error event; the call survives and the next turn works.
func TestProviderFailureDoesNotEndTheCall(t *testing.T) {
	t.Parallel()
	f := audio.Format{Encoding: audio.PCM16, SampleRate: 16000}
	c, err := voice.New(context.Background(), cfg(f, f), providers(t, &failingModel{}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := speech(t, ask, f, 700)
	go stream(t, c, f, b, 4)
	var errs, done int
	for ev := range c.Events() {
		switch ev.Type {
		case voice.Error:
			errs++
			if !strings.Contains(ev.Err.Error(), "timed out") {
				t.Fatalf("error event %v", ev.Err)
			}
		case voice.ResponseDone:
			done++
			if done == 1 {
				go stream(t, c, f, b, 4) // ask again
				continue
			}
			if errs != 1 || ev.Text != "Sure. I booked the meeting for tomorrow at ten." {
				t.Fatalf("after a failure: %d errors, reply %q", errs, ev.Text)
			}
			return
		}
	}
	t.Fatal("events ended")
}

// A client pushing audio far faster than real time is refused, and the
// call's memory stays bounded by its input buffer whatever it sends.
func TestTooFastAudioKeepsMemoryBounded(t *testing.T) {
	f := audio.Format{Encoding: audio.PCM16, SampleRate: 16000}
	c, err := voice.New(context.Background(), voice.Config{Input: f, Output: f, Turn: voice.Manual}, providers(t, llm.DefaultScript))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	chunk := make([]byte, 32000) // one second
	refused := 0
	for range 600 { // ten minutes of audio in a burst: 19 MB
		if err := c.AppendAudio(chunk); errors.Is(err, voice.ErrInputOverflow) {
			refused++
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if refused < 590 || growth > 4<<20 {
		t.Fatalf("%d of 600 seconds refused; heap grew %d bytes", refused, growth)
	}
	t.Logf("heap grew %d KiB after a 600 s burst (input buffer: %d ms)", growth>>10, voice.InputBufferMS)
}

// With a minimum interruption duration, a cough during the reply does not
// cut it off, and is not taken as a turn.
func TestCoughDoesNotInterrupt(t *testing.T) {
	t.Parallel()
	slow := &llm.Scripted{Rules: []llm.Rule{{Match: []string{"book meeting"}, Reply: "One moment please. I am booking the meeting now. It is done."}},
		Fallback: "What?", WordDelay: 20 * time.Millisecond}
	f := audio.Format{Encoding: audio.PCM16, SampleRate: 16000}
	conf := cfg(f, f)
	conf.MinInterruptionMS = 400
	c, err := voice.New(context.Background(), conf, providers(t, slow))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go stream(t, c, f, speech(t, ask, f, 700), 4)
	coughed := false
	responses := 0
	for ev := range c.Events() {
		switch ev.Type {
		case voice.AudioDelta:
			if !coughed {
				coughed = true
				cough := make([]int16, 16000*150/1000) // 150 ms of noise, then silence
				for i := range cough {
					cough[i] = int16((i*7919)%16000 - 8000)
				}
				cough = append(cough, make([]int16, 16000*700/1000)...)
				b, _ := audio.Encode(f, cough, nil)
				go stream(t, c, f, b, 1)
			}
		case voice.ResponseStarted:
			responses++
		case voice.ResponseDone:
			if ev.Interrupted {
				t.Fatal("a cough interrupted the reply")
			}
			time.Sleep(900 * time.Millisecond) // let the cough's silence pass
			for drained := false; !drained; {
				select {
				case e := <-c.Events():
					if e.Type == voice.ResponseStarted {
						responses++
					}
				default:
					drained = true
				}
			}
			if responses != 1 {
				t.Fatalf("%d responses: the cough was taken as a turn", responses)
			}
			return
		}
	}
	t.Fatal("events ended")
}
