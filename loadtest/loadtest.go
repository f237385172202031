// Package loadtest opens many concurrent calls against an avb server, each
// streaming real-time paced 20 ms audio frames over Converse (gRPC), and
// measures what callers feel: how long a call takes to open, how late echoed
// frames come back (passthrough mode) and how long the agent takes to answer
// (full-pipeline mode).
package loadtest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	avbv1 "github.com/agentvoicebox/avb/gen/go/avb/v1"
	"github.com/agentvoicebox/avb/gen/go/avb/v1/avbv1connect"
)

// Mode is what the calls exercise.
type Mode string

// Modes.
const (
	// Passthrough calls run in echo mode: the media path without providers.
	Passthrough Mode = "passthrough"
	// Full calls run the agent: speech to text, model, text to speech.
	Full Mode = "full"
	// Idle calls open and send nothing: what a call holding still costs.
	Idle Mode = "idle"
)

// FrameMS is the frame length calls send.
const FrameMS = 20

const rate = 16000 // calls send and receive pcm16 at 16 kHz

// Config describes a load test.
type Config struct {
	Server string // base URL, e.g. http://localhost:8080
	APIKey string
	Calls  int
	// Duration each call streams audio for, after all calls have opened.
	Duration time.Duration
	// Ramp spreads the call openings over this long.
	Ramp time.Duration
	Mode Mode
	// Utterance is caller audio (pcm16, 16 kHz) looped for the duration; full
	// mode needs speech followed by enough silence to end the turn.
	Utterance []int16
	// Phrases are recognition hints for full mode.
	Phrases []string
	// Lockstep makes every call say the same words at the same instant,
	// frame for frame: the worst case, where every turn of every call ends
	// together and each stage's work queues. Otherwise call i runs i/Calls
	// of an utterance and of a frame behind call 0, as independent callers
	// do.
	Lockstep bool
	// MetricsURL, when set, is the server's Prometheus endpoint: its memory is
	// read before the calls open and halfway through the steady state.
	MetricsURL string
	// Phone mode: avb's SIP endpoint, the number to call and a trunk's
	// digest credentials.
	SIP                          netip.AddrPort
	Number, SIPUser, SIPPassword string
}

// Report is what a load test measured.
type Report struct {
	Mode        Mode
	Lockstep    bool
	Calls       int
	Opened      int
	Failed      int
	Errors      []string // distinct failures, at most 10
	Connect     Percentiles
	FrameDelay  Percentiles // passthrough: frame sent -> its echo received
	TurnLatency Percentiles // full: speech stopped received -> first reply audio
	// MouthToEar: the end of the caller's speech sent -> the first reply
	// audio received (full and phone), the turn detector's wait included.
	MouthToEar   Percentiles
	ServerFirst  Percentiles // full: the server's first_byte_ms
	Turns        int
	FramesSent   int
	FramesEchoed int
	// Server memory (resident set and Go heap in use), in bytes, before the
	// calls and during them; 0 when not measured.
	RSSBefore, RSSDuring   float64
	HeapBefore, HeapDuring float64
	// TTSCacheHits and TTSCacheMisses are the server's synthesis cache
	// lookups during the run (full mode, with MetricsURL).
	TTSCacheHits, TTSCacheMisses float64
	// CPUSeconds is the server's CPU (its process and its synthesis
	// workers) over the middle half of the steady state, and CPUWindow that
	// half's length: CPUSeconds/CPUWindow cores for the calls.
	CPUSeconds, CPUWindow float64
}

// Percentiles of a latency sample, in milliseconds.
type Percentiles struct {
	N                  int
	P50, P90, P99, Max float64
}

func percentiles(ms []float64) Percentiles {
	if len(ms) == 0 {
		return Percentiles{}
	}
	slices.Sort(ms)
	at := func(q float64) float64 { return ms[min(len(ms)-1, int(math.Ceil(q*float64(len(ms))))-1)] }
	return Percentiles{N: len(ms), P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: ms[len(ms)-1]}
}

func (p Percentiles) String() string {
	if p.N == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms (n=%d)", p.P50, p.P90, p.P99, p.Max, p.N)
}

// String renders the report for a terminal.
func (r Report) String() string {
	var b strings.Builder
	step := ""
	if r.Lockstep {
		step = " in lockstep"
	}
	fmt.Fprintf(&b, "%d %s calls%s: %d opened, %d failed\n", r.Calls, r.Mode, step, r.Opened, r.Failed)
	fmt.Fprintf(&b, "  connect       %s\n", r.Connect)
	switch r.Mode {
	case Idle:
	case Passthrough:
		fmt.Fprintf(&b, "  frame delay   %s\n  frames        %d sent, %d echoed\n", r.FrameDelay, r.FramesSent, r.FramesEchoed)
	case Phone:
		fmt.Fprintf(&b, "  mouth to ear  %s (end of the caller's speech in RTP -> first reply RTP packet with speech)\n  turns         %d\n", r.MouthToEar, r.Turns)
	default:
		fmt.Fprintf(&b, "  turn latency  %s (client: speech stopped -> first reply audio)\n", r.TurnLatency)
		fmt.Fprintf(&b, "  mouth to ear  %s (client: end of speech sent -> first reply audio)\n", r.MouthToEar)
		fmt.Fprintf(&b, "  server        %s (first byte after the end of speech was detected)\n  turns         %d\n", r.ServerFirst, r.Turns)
	}
	if n := r.TTSCacheHits + r.TTSCacheMisses; n > 0 {
		fmt.Fprintf(&b, "  synthesis cache %.0f of %.0f sentences replayed (hit rate %.0f%%)\n", r.TTSCacheHits, n, 100*r.TTSCacheHits/n)
	}
	if r.CPUWindow > 0 && r.Opened > 0 {
		cores := r.CPUSeconds / r.CPUWindow
		fmt.Fprintf(&b, "  server CPU    %.2f cores: %.1f%% of a core per call\n", cores, 100*cores/float64(r.Opened))
	}
	if r.RSSBefore > 0 && r.Opened > 0 {
		fmt.Fprintf(&b, "  server memory %.1f MiB -> %.1f MiB resident, heap %.1f -> %.1f MiB: %.0f KiB resident, %.0f KiB heap per call\n",
			r.RSSBefore/(1<<20), r.RSSDuring/(1<<20), r.HeapBefore/(1<<20), r.HeapDuring/(1<<20),
			(r.RSSDuring-r.RSSBefore)/1024/float64(r.Opened), (r.HeapDuring-r.HeapBefore)/1024/float64(r.Opened))
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "  error: %s\n", e)
	}
	return b.String()
}

// result is one call's measurements.
type result struct {
	connect     float64
	frameDelay  []float64
	turn        []float64
	mouth       []float64
	serverFirst []float64
	sent        int
	echoed      int
	err         error
}

// Run runs the load test and reports; it fails only on a bad configuration.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Calls <= 0 || cfg.Duration <= 0 || (cfg.Mode != Idle && len(cfg.Utterance) < rate*FrameMS/1000) {
		return Report{}, errors.New("loadtest: calls, duration and an utterance of at least one frame are required")
	}
	if cfg.Mode != Passthrough && cfg.Mode != Full && cfg.Mode != Idle && cfg.Mode != Phone {
		return Report{}, fmt.Errorf("loadtest: mode %q: want passthrough, full, idle or phone", cfg.Mode)
	}
	if cfg.Mode == Phone && (!cfg.SIP.IsValid() || cfg.Number == "") {
		return Report{}, errors.New("loadtest: phone calls need the SIP endpoint's address and a number")
	}

	rep := Report{Mode: cfg.Mode, Calls: cfg.Calls, Lockstep: cfg.Lockstep}
	var before serverSample
	if cfg.MetricsURL != "" {
		before = sampleServer(ctx, cfg.MetricsURL)
		rep.RSSBefore, rep.HeapBefore = before.rss, before.heap
	}
	results := make([]result, cfg.Calls)
	var wg sync.WaitGroup
	start := time.Now()
	if cfg.MetricsURL != "" {
		wg.Add(1)
		go func() { // the middle half of the steady state
			defer wg.Done()
			time.Sleep(cfg.Ramp + cfg.Duration/4)
			from, at := sampleServer(ctx, cfg.MetricsURL), time.Now()
			time.Sleep(cfg.Duration / 2)
			during := sampleServer(ctx, cfg.MetricsURL)
			rep.RSSDuring, rep.HeapDuring = during.rss, during.heap
			if from.cpu > 0 {
				rep.CPUSeconds, rep.CPUWindow = during.cpu-from.cpu, time.Since(at).Seconds()
			}
		}()
	}
	for i := range cfg.Calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if cfg.Ramp > 0 {
				time.Sleep(cfg.Ramp * time.Duration(i) / time.Duration(cfg.Calls))
			}
			if cfg.Mode == Phone {
				results[i] = phoneCall(ctx, cfg, start.Add(cfg.Ramp), phase(cfg, i))
				return
			}
			results[i] = call(ctx, newClient(cfg.Server), cfg, start.Add(cfg.Ramp), phase(cfg, i))
		}()
	}
	wg.Wait()
	if cfg.MetricsURL != "" {
		after := sampleServer(ctx, cfg.MetricsURL)
		rep.TTSCacheHits, rep.TTSCacheMisses = after.ttsHits-before.ttsHits, after.ttsMisses-before.ttsMisses
	}

	var conn, delay, turn, server, mouth []float64
	seen := map[string]bool{}
	for _, r := range results {
		if r.connect > 0 {
			rep.Opened++
			conn = append(conn, r.connect)
		}
		if r.err != nil {
			rep.Failed++
			if msg := r.err.Error(); !seen[msg] && len(rep.Errors) < 10 {
				seen[msg] = true
				rep.Errors = append(rep.Errors, msg)
			}
		}
		delay = append(delay, r.frameDelay...)
		turn = append(turn, r.turn...)
		mouth = append(mouth, r.mouth...)
		server = append(server, r.serverFirst...)
		rep.FramesSent += r.sent
		rep.FramesEchoed += r.echoed
	}
	rep.Connect, rep.FrameDelay, rep.TurnLatency, rep.ServerFirst = percentiles(conn), percentiles(delay), percentiles(turn), percentiles(server)
	rep.MouthToEar = percentiles(mouth)
	rep.Turns = max(len(turn), len(mouth))
	return rep, nil
}

// newClient is a caller's own client: its own HTTP/2 connection, as real
// callers have (calls sharing one connection would share its one writer).
func newClient(server string) avbv1connect.VoiceServiceClient {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	p.SetHTTP2(true)
	return avbv1connect.NewVoiceServiceClient(&http.Client{Transport: &http.Transport{Protocols: &p}}, server, connect.WithGRPC())
}

// call runs one call: it opens, waits for every call to be open (the
// steady state starts at steady), streams for the duration, and hangs up.
// phase is how far call i's audio runs behind call 0's: a share of the
// utterance (in samples, whole frames) and of a frame.
type callPhase struct {
	samples int
	shift   time.Duration
}

func phase(cfg Config, i int) callPhase {
	if cfg.Lockstep || cfg.Calls <= 1 {
		return callPhase{}
	}
	n := rate * FrameMS / 1000
	frames := len(cfg.Utterance) / n
	return callPhase{samples: (frames * i / cfg.Calls) * n, shift: FrameMS * time.Millisecond * time.Duration(i) / time.Duration(cfg.Calls)}
}

func call(ctx context.Context, client avbv1connect.VoiceServiceClient, cfg Config, steady time.Time, ph callPhase) result {
	var res result
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+cfg.Ramp+time.Minute)
	defer cancel()
	stream := client.Converse(ctx)
	stream.RequestHeader().Set("X-API-Key", cfg.APIKey)
	pcm16k := &avbv1.AudioFormat{Encoding: avbv1.AudioEncoding_AUDIO_ENCODING_PCM16, SampleRate: rate}
	sc := &avbv1.SessionConfig{InputAudioFormat: pcm16k, OutputAudioFormat: pcm16k, PhraseHints: cfg.Phrases}
	if cfg.Mode != Full {
		sc.Mode = avbv1.SessionMode_SESSION_MODE_ECHO
	}
	opened := time.Now()
	if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Start{Start: &avbv1.SessionStart{Config: sc}}}); err != nil {
		res.err = fmt.Errorf("start: %w", err)
		return res
	}
	first, err := stream.Receive()
	if err != nil || first.GetEvent().GetSessionStarted() == nil {
		res.err = fmt.Errorf("open: %v", err)
		return res
	}
	res.connect = ms(time.Since(opened))

	// Frame i is due at steady + i*20 ms; sendAt[i] is when it went out.
	frames := int(cfg.Duration / (FrameMS * time.Millisecond))
	if cfg.Mode == Idle {
		frames = 0 // hold the line until the others have measured, then hang up
		steady = steady.Add(cfg.Duration)
	}
	sendAt := make([]time.Time, frames)
	var mu sync.Mutex
	sendErr := make(chan error, 1)
	// ends are when a frame holding the end of the utterance's speech went out.
	var ends []time.Time
	go func() {
		sendErr <- send(stream, cfg.Utterance, steady.Add(ph.shift), ph.samples, sendAt, &mu, &ends)
	}()

	var echoedMS float64
	var stopped time.Time
	waiting := false
	for {
		msg, err := stream.Receive()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				res.err = err
			}
			break
		}
		now := time.Now()
		switch ev := msg.GetEvent().GetEvent().(type) {
		case *avbv1.VoiceEvent_ResponseAudioDelta:
			if cfg.Mode == Passthrough {
				// Echoed audio is frame-aligned: the frame whose end it reaches is back.
				before := int(echoedMS / FrameMS)
				echoedMS += ev.ResponseAudioDelta.GetAudioMs()
				mu.Lock()
				for i := before; i < int(echoedMS/FrameMS) && i < len(sendAt); i++ {
					if !sendAt[i].IsZero() {
						res.frameDelay = append(res.frameDelay, ms(now.Sub(sendAt[i])))
						res.echoed++
					}
				}
				mu.Unlock()
			} else if waiting {
				res.turn = append(res.turn, ms(now.Sub(stopped)))
				waiting = false
				mu.Lock()
				if n := len(ends); n > 0 && ends[n-1].Before(now) {
					res.mouth = append(res.mouth, ms(now.Sub(ends[n-1])))
				}
				mu.Unlock()
			}
		case *avbv1.VoiceEvent_SpeechStopped:
			stopped, waiting = now, true
		case *avbv1.VoiceEvent_ResponseDone:
			if !ev.ResponseDone.GetInterrupted() {
				res.serverFirst = append(res.serverFirst, ev.ResponseDone.GetLatency().GetFirstByteMs())
			}
			waiting = false
		case *avbv1.VoiceEvent_Error:
			res.err = fmt.Errorf("%s: %s", ev.Error.GetReason(), ev.Error.GetMessage())
		}
	}
	if err := <-sendErr; err != nil && res.err == nil {
		res.err = err
	}
	res.sent = countSent(sendAt)
	return res
}

// send streams the utterance in a loop, one frame every 20 ms from steady
// on (no drift: each frame has its own due time), then ends the session.
func send(stream *connect.BidiStreamForClient[avbv1.ConverseRequest, avbv1.ConverseResponse], utt []int16, steady time.Time, offset int, sendAt []time.Time, mu *sync.Mutex, ends *[]time.Time) error {
	n := rate * FrameMS / 1000
	end := speechEnd(utt)
	buf := make([]byte, 0, 2*n)
	time.Sleep(time.Until(steady))
	for i := range sendAt {
		time.Sleep(time.Until(steady.Add(time.Duration(i) * FrameMS * time.Millisecond)))
		buf = buf[:0]
		for k := range n {
			buf = binary.LittleEndian.AppendUint16(buf, uint16(utt[(offset+i*n+k)%len(utt)]))
		}
		mu.Lock()
		sendAt[i] = time.Now()
		if first := (offset + i*n) % len(utt); end > 0 && first < end && end <= first+n {
			*ends = append(*ends, sendAt[i])
		}
		mu.Unlock()
		if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Audio{Audio: &avbv1.AudioAppend{Audio: buf}}}); err != nil {
			return fmt.Errorf("send audio: %w", err)
		}
	}
	// Let the last echoes and replies arrive, then hang up.
	time.Sleep(time.Second)
	if err := stream.Send(&avbv1.ConverseRequest{Message: &avbv1.ConverseRequest_Control{Control: &avbv1.ClientControl{
		Control: &avbv1.ClientControl_End{End: &avbv1.SessionEnd{}}}}}); err != nil {
		return fmt.Errorf("end: %w", err)
	}
	return stream.CloseRequest()
}

func countSent(at []time.Time) int {
	n := 0
	for _, t := range at {
		if !t.IsZero() {
			n++
		}
	}
	return n
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// serverSample is what the load test reads off the server's metrics.
type serverSample struct {
	rss, heap          float64 // process_resident_memory_bytes, go_memstats_heap_inuse_bytes
	ttsHits, ttsMisses float64 // cache_{hits,misses}_total{cache="tts"}
	// processCPU and workerCPU: process_cpu_seconds_total and
	// tts_worker_cpu_seconds_total; cpu their sum.
	processCPU, workerCPU, cpu float64
}

// sampleServer reads a Prometheus text endpoint.
func sampleServer(ctx context.Context, url string) serverSample {
	var out serverSample
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return out
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		for name, into := range map[string]*float64{
			"process_resident_memory_bytes":   &out.rss,
			"go_memstats_heap_inuse_bytes":    &out.heap,
			`cache_hits_total{cache="tts"}`:   &out.ttsHits,
			`cache_misses_total{cache="tts"}`: &out.ttsMisses,
			"process_cpu_seconds_total":       &out.processCPU,
			"tts_worker_cpu_seconds_total":    &out.workerCPU,
		} {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				fmt.Sscanf(v, "%g", into)
			}
		}
	}
	out.cpu = out.processCPU + out.workerCPU
	return out
}
