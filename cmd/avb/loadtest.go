package main

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentvoicebox/avb/loadtest"
	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/tts"
	"github.com/agentvoicebox/avb/voice/wav"
)

func loadtestCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "loadtest", Short: "Load tools: measure the platform under many concurrent users"}
	cmd.AddCommand(loadtestCallsCmd())
	return cmd
}

func loadtestCallsCmd() *cobra.Command {
	var cfg loadtest.Config
	var mode, in, sipAddr string
	var baseline bool
	cmd := &cobra.Command{
		Use:   "calls",
		Short: "Open N concurrent calls streaming real-time audio; report connect time, frame delay and turn latency",
		Example: `  avb loadtest calls --calls 100 --mode passthrough --duration 30s
  avb loadtest calls --calls 10 --mode full --duration 60s
  avb loadtest calls --calls 200 --mode passthrough --baseline`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.APIKey == "" {
				cfg.APIKey = os.Getenv("AVB_API_KEY")
			}
			cfg.Mode = loadtest.Mode(mode)
			var err error
			if cfg.Mode == loadtest.Phone {
				if cfg.SIP, err = netip.ParseAddrPort(sipAddr); err != nil {
					return fmt.Errorf("--sip %q: want the SIP endpoint's ip:port: %w", sipAddr, err)
				}
				if cfg.SIPPassword == "" {
					cfg.SIPPassword = os.Getenv("AVB_SIP_PASSWORD")
				}
			}
			if cfg.Utterance, err = utterance(cmd.Context(), cfg.Mode, in, &cfg.Phrases); err != nil {
				return err
			}
			if cfg.MetricsURL == "" {
				cfg.MetricsURL = strings.TrimSuffix(cfg.Server, "/") + "/metrics"
			}
			var base loadtest.Report
			if baseline {
				if cfg.Mode != loadtest.Passthrough {
					return fmt.Errorf("--baseline compares the media path: it needs --mode passthrough")
				}
				url, stop, err := loadtest.StartBaseline()
				if err != nil {
					return err
				}
				bc := cfg
				bc.Server, bc.MetricsURL = url, ""
				fmt.Fprintf(cmd.ErrOrStderr(), "%d calls against a bare connect-go echo handler (the baseline) for %s...\n", cfg.Calls, cfg.Duration)
				base, err = loadtest.Run(cmd.Context(), bc)
				stop()
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "baseline (bare connect-go echo, in this process):\n%s", base)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d %s calls against %s for %s...\n", cfg.Calls, cfg.Mode, cfg.Server, cfg.Duration)
			rep, err := loadtest.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), rep)
			if baseline && base.FrameDelay.P99 > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "avb / baseline: frame delay p50 x%.2f, p99 x%.2f\n",
					rep.FrameDelay.P50/base.FrameDelay.P50, rep.FrameDelay.P99/base.FrameDelay.P99)
			}
			if rep.Failed > 0 {
				return fmt.Errorf("%d of %d calls failed", rep.Failed, rep.Calls)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Server, "server", "http://localhost:8080", "avb server URL")
	f.StringVar(&cfg.APIKey, "key", "", "API key with the realtime scope (default $AVB_API_KEY)")
	f.IntVar(&cfg.Calls, "calls", 10, "concurrent calls")
	f.DurationVar(&cfg.Duration, "duration", 20*time.Second, "how long each call streams audio once all are open")
	f.DurationVar(&cfg.Ramp, "ramp", 2*time.Second, "spread the call openings over this long")
	f.StringVar(&mode, "mode", "passthrough", "passthrough (echo: the media path alone), full (speech to text, model, text to speech), phone (full calls over SIP and RTP) or idle (open and silent: memory per call)")
	f.StringVar(&sipAddr, "sip", "127.0.0.1:5060", "phone: avb's SIP endpoint (ip:port)")
	f.StringVar(&cfg.Number, "number", "", "phone: the number to call (E.164, one of the tenant's)")
	f.StringVar(&cfg.SIPUser, "sip-user", "", "phone: the trunk's digest username")
	f.StringVar(&cfg.SIPPassword, "sip-password", "", "phone: the trunk's digest password (default $AVB_SIP_PASSWORD)")
	f.StringVar(&in, "in", "", "WAV file the callers say, looped (default: a tone pattern for passthrough, a spoken request for full)")
	f.StringSliceVar(&cfg.Phrases, "hint", nil, "phrase hints for recognition in full mode")
	f.BoolVar(&cfg.Lockstep, "lockstep", false, "every call says the same words at the same instant (the worst case); by default each call runs its share of an utterance behind the one before, as independent callers do")
	f.BoolVar(&baseline, "baseline", false, "passthrough: first run the same load against a bare connect-go echo handler in this process, and compare")
	f.StringVar(&cfg.MetricsURL, "metrics", "", "server metrics URL for memory per call (default <server>/metrics)")
	return cmd
}

// The request full-mode callers make, and its hints.
const loadtestAsk = "please book a meeting for tomorrow at ten"

// utterance is the audio each caller loops: a WAV file, or a default for the mode.
func utterance(ctx context.Context, mode loadtest.Mode, path string, hints *[]string) ([]int16, error) {
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		pcm, rate, err := wav.Read(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return audio.NewResampler(rate, 16000).Process(pcm, nil), nil
	}
	if mode != loadtest.Full && mode != loadtest.Phone {
		// 400 ms of a 440 Hz tone at -12 dBFS, then 600 ms of silence.
		pcm := make([]int16, 16000)
		for i := range 6400 {
			pcm[i] = int16(8192 * math.Sin(2*math.Pi*440*float64(i)/16000))
		}
		return pcm, nil
	}
	e, err := tts.NewEspeak()
	if err != nil {
		return nil, err
	}
	rs := audio.NewResampler(e.SampleRate(), 16000)
	var pcm []int16
	if err := e.Synthesize(ctx, tts.Request{Text: loadtestAsk}, func(s []int16) error {
		pcm = rs.Process(s, pcm)
		return nil
	}); err != nil {
		return nil, err
	}
	if len(*hints) == 0 {
		*hints = []string{loadtestAsk, "cancel my meeting", "hello"}
	}
	// Silence ends the turn and leaves time for the reply before the next ask.
	return append(pcm, make([]int16, 16000*4)...), nil
}
